/*
 * Humanline chat widget — add it to any page with one tag:
 *
 *   <script src="https://support.example.com/widget.js" defer></script>
 *
 * Optional attributes on the tag: data-lang="en|zh-Hans|zh-Hant" (interface language; default
 * from the browser), data-title="…", data-open="true" (start opened).
 *
 * It speaks the customer WebSocket protocol (docs/protocol.md): hello/welcome, message/ack,
 * status and error frames. The visitor token and conversation id are kept in localStorage so a
 * reload resumes the same conversation; on every (re)connect the widget sends the last seq it
 * has seen and the hub replays what was missed. Messages not yet acknowledged are kept in
 * localStorage too and sent again with the same client_msg_id, which the hub de-duplicates.
 * No build step, no external resources.
 */
(function () {
  "use strict";
  if (window.HumanlineWidget) return;

  var script = document.currentScript || (function () {
    var all = document.getElementsByTagName("script");
    return all[all.length - 1];
  })();
  var base = new URL(script.src, location.href);
  var wsUrl = (base.protocol === "https:" ? "wss://" : "ws://") + base.host + "/ws/chat";
  var STORE_KEY = "humanline:" + base.host;

  var TEXT = {
    en: {
      open: "Chat with us", close: "Close chat", title: "Customer support",
      placeholder: "Type your message…", send: "Send", connecting: "Connecting…",
      offline: "Connection lost — reconnecting…", you: "You", bot: "Assistant", system: "Notice",
      queued: "You are in the {queue} queue", position: "Position {position}",
      eta: "estimated wait about {minutes} min", agent: "{name} has joined the conversation",
      with_agent: "Chatting with {name}", bot_status: "Automated assistant — ask for a person at any time",
      closed: "This conversation is closed", case: "Case {case}",
      human: "Talk to a person", log: "Conversation"
    },
    "zh-Hans": {
      open: "在线客服", close: "关闭对话", title: "客户服务",
      placeholder: "请输入您的问题…", send: "发送", connecting: "正在连接…",
      offline: "连接中断，正在重连…", you: "我", bot: "智能助手", system: "通知",
      queued: "您在「{queue}」队列中", position: "第 {position} 位",
      eta: "预计等待约 {minutes} 分钟", agent: "{name} 已加入对话",
      with_agent: "正在与 {name} 对话", bot_status: "智能助手 — 随时可以要求转人工",
      closed: "对话已结束", case: "案件编号 {case}",
      human: "转人工", log: "对话记录"
    },
    "zh-Hant": {
      open: "線上客服", close: "關閉對話", title: "客戶服務",
      placeholder: "請輸入您的問題…", send: "傳送", connecting: "連線中…",
      offline: "連線中斷，正在重新連線…", you: "我", bot: "智慧助理", system: "通知",
      queued: "您在「{queue}」佇列中", position: "第 {position} 位",
      eta: "預計等候約 {minutes} 分鐘", agent: "{name} 已加入對話",
      with_agent: "正在與 {name} 對話", bot_status: "智慧助理 — 隨時可以要求轉真人客服",
      closed: "對話已結束", case: "案件編號 {case}",
      human: "轉真人客服", log: "對話紀錄"
    }
  };

  function pickLang() {
    var wanted = script.getAttribute("data-lang");
    if (wanted && TEXT[wanted]) return wanted;
    var langs = navigator.languages || [navigator.language || "en"];
    for (var i = 0; i < langs.length; i++) {
      var l = String(langs[i]).toLowerCase();
      if (l.indexOf("zh") === 0) {
        return /hant|tw|hk|mo/.test(l) ? "zh-Hant" : "zh-Hans";
      }
      if (l.indexOf("en") === 0) return "en";
    }
    return "en";
  }
  var lang = pickLang();
  function t(key, vars) {
    var s = (TEXT[lang] && TEXT[lang][key]) || TEXT.en[key] || key;
    return s.replace(/\{(\w+)\}/g, function (_, k) { return vars && vars[k] != null ? vars[k] : ""; });
  }

  // ---- persistent state -------------------------------------------------------------------
  function load() {
    try { return JSON.parse(localStorage.getItem(STORE_KEY)) || {}; } catch (e) { return {}; }
  }
  var state = load();
  state.pending = state.pending || [];        // [{client_msg_id, text}] not yet acknowledged
  state.last_seq = state.last_seq || 0;
  function save() {
    try { localStorage.setItem(STORE_KEY, JSON.stringify(state)); } catch (e) { /* private mode */ }
  }

  // ---- DOM ---------------------------------------------------------------------------------
  var css = [
    ".hl-root{position:fixed;right:16px;bottom:16px;z-index:2147483000;font:15px/1.45 system-ui,-apple-system,'Segoe UI','PingFang SC','Noto Sans CJK SC','Microsoft YaHei',sans-serif;color:#1d2330}",
    ".hl-launch{border:0;border-radius:28px;padding:12px 20px;background:#0b6e4f;color:#fff;font:inherit;font-weight:600;box-shadow:0 4px 14px rgba(0,0,0,.25);cursor:pointer}",
    ".hl-launch:focus-visible,.hl-panel button:focus-visible,.hl-input:focus-visible{outline:3px solid #f4b400;outline-offset:2px}",
    ".hl-panel{display:none;flex-direction:column;width:370px;max-width:calc(100vw - 24px);height:560px;max-height:calc(100vh - 90px);background:#fff;border-radius:14px;box-shadow:0 10px 36px rgba(0,0,0,.3);overflow:hidden;margin-bottom:10px}",
    ".hl-root.hl-open .hl-panel{display:flex}",
    ".hl-head{background:#0b6e4f;color:#fff;padding:12px 14px;display:flex;align-items:center;gap:8px}",
    ".hl-head h2{font-size:16px;margin:0;flex:1}",
    ".hl-x{background:transparent;border:0;color:#fff;font-size:22px;line-height:1;cursor:pointer;padding:2px 6px}",
    ".hl-status{background:#e8f3ee;color:#0b4f39;padding:8px 14px;font-size:13px;border-bottom:1px solid #d3e6dc}",
    ".hl-status.hl-queued{background:#fff6db;color:#6b4e00;border-color:#f1e0a6}",
    ".hl-status.hl-agent{background:#e6efff;color:#123b80;border-color:#c9dafc}",
    ".hl-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f6f7f9}",
    ".hl-msg{max-width:82%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word}",
    ".hl-msg .hl-who{display:block;font-size:11px;opacity:.7;margin-bottom:2px}",
    ".hl-customer{align-self:flex-end;background:#0b6e4f;color:#fff;border-bottom-right-radius:3px}",
    ".hl-bot{align-self:flex-start;background:#fff;border:1px solid #dde1e7;border-bottom-left-radius:3px}",
    ".hl-agent{align-self:flex-start;background:#e6efff;border:1px solid #c9dafc;border-bottom-left-radius:3px}",
    ".hl-system{align-self:center;background:transparent;color:#5b6473;font-size:13px;text-align:center;max-width:95%}",
    ".hl-pending{opacity:.6}",
    ".hl-buttons{display:flex;flex-wrap:wrap;gap:6px;align-self:flex-start}",
    ".hl-buttons button{border:1px solid #0b6e4f;background:#fff;color:#0b6e4f;border-radius:16px;padding:5px 12px;font:inherit;font-size:14px;cursor:pointer}",
    ".hl-form{display:flex;gap:6px;padding:10px;border-top:1px solid #e3e6ea;background:#fff}",
    ".hl-input{flex:1;min-width:0;border:1px solid #c5ccd6;border-radius:8px;padding:9px 10px;font:inherit;resize:none}",
    ".hl-send{border:0;border-radius:8px;background:#0b6e4f;color:#fff;padding:0 16px;font:inherit;font-weight:600;cursor:pointer}",
    ".hl-human{border:0;background:transparent;color:#fff;text-decoration:underline;font:inherit;font-size:13px;cursor:pointer}",
    "@media (max-width:480px){.hl-root{right:0;bottom:0;left:0}.hl-root.hl-open .hl-launch{display:none}.hl-panel{width:100vw;max-width:100vw;height:100vh;max-height:100vh;border-radius:0;margin:0}.hl-launch{position:fixed;right:12px;bottom:12px}}"
  ].join("\n");
  var style = document.createElement("style");
  style.textContent = css;
  document.head.appendChild(style);

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text != null) e.textContent = text;   // textContent only: customer and agent text is never HTML
    return e;
  }

  var root = el("div", { "class": "hl-root", "data-humanline": "widget", lang: lang });
  var panel = el("section", { "class": "hl-panel", role: "dialog", "aria-modal": "false",
                              "aria-labelledby": "hl-title", id: "hl-panel" });
  var head = el("header", { "class": "hl-head" });
  var title = el("h2", { id: "hl-title" }, script.getAttribute("data-title") || t("title"));
  var humanBtn = el("button", { "class": "hl-human", type: "button" }, t("human"));
  var closeBtn = el("button", { "class": "hl-x", type: "button", "aria-label": t("close") }, "×");
  head.appendChild(title); head.appendChild(humanBtn); head.appendChild(closeBtn);
  var status = el("div", { "class": "hl-status", role: "status", "aria-live": "polite" }, t("connecting"));
  var log = el("div", { "class": "hl-log", role: "log", "aria-live": "polite", "aria-label": t("log"), tabindex: "0" });
  var form = el("form", { "class": "hl-form" });
  var input = el("textarea", { "class": "hl-input", rows: "1", "aria-label": t("placeholder"),
                                placeholder: t("placeholder"), maxlength: "4000" });
  var send = el("button", { "class": "hl-send", type: "submit" }, t("send"));
  form.appendChild(input); form.appendChild(send);
  panel.appendChild(head); panel.appendChild(status); panel.appendChild(log); panel.appendChild(form);
  var launch = el("button", { "class": "hl-launch", type: "button", "aria-controls": "hl-panel",
                               "aria-expanded": "false" }, t("open"));
  root.appendChild(panel); root.appendChild(launch);

  function mount() { document.body.appendChild(root); }
  if (document.body) mount(); else document.addEventListener("DOMContentLoaded", mount);

  function setOpen(open) {
    root.classList.toggle("hl-open", open);
    launch.setAttribute("aria-expanded", open ? "true" : "false");
    state.open = open; save();
    if (open) { connect(); setTimeout(function () { input.focus(); }, 0); }
    else launch.focus();
  }
  launch.addEventListener("click", function () { setOpen(!root.classList.contains("hl-open")); });
  closeBtn.addEventListener("click", function () { setOpen(false); });
  panel.addEventListener("keydown", function (e) { if (e.key === "Escape") setOpen(false); });
  humanBtn.addEventListener("click", function () { sendText(t("human")); });

  // ---- rendering ---------------------------------------------------------------------------
  var seen = {};          // seq -> true, so a replay never shows a message twice
  var pendingNodes = {};  // client_msg_id -> node shown before the ack

  function render(sender, text, opts) {
    opts = opts || {};
    var node = el("div", { "class": "hl-msg hl-" + sender, "data-sender": sender });
    if (opts.seq) node.setAttribute("data-seq", String(opts.seq));
    var who = sender === "customer" ? t("you") : sender === "agent" ? (opts.agent_name || "Agent")
            : sender === "bot" ? t("bot") : t("system");
    node.appendChild(el("span", { "class": "hl-who" }, who));
    node.appendChild(document.createTextNode(text));
    log.appendChild(node);
    if (opts.buttons && opts.buttons.length) {
      var row = el("div", { "class": "hl-buttons", role: "group" });
      opts.buttons.forEach(function (b) {
        var btn = el("button", { type: "button" }, b.title);
        btn.addEventListener("click", function () { row.remove(); sendText(b.payload || b.title, b.title); });
        row.appendChild(btn);
      });
      log.appendChild(row);
    }
    log.scrollTop = log.scrollHeight;
    return node;
  }

  function showStatus(f) {
    status.className = "hl-status hl-" + f.status;
    var parts = [];
    if (f.status === "queued") {
      parts.push(t("queued", { queue: f.queue_display || f.queue || "" }));
      if (f.position) parts.push(t("position", { position: f.position }));
      if (f.eta_seconds != null) parts.push(t("eta", { minutes: Math.max(1, Math.round(f.eta_seconds / 60)) }));
    } else if (f.status === "agent") {
      parts.push(t("with_agent", { name: f.agent_name || "" }));
    } else if (f.status === "closed") {
      parts.push(t("closed"));
    } else {
      parts.push(t("bot_status"));
    }
    if (f.case_id) parts.push(t("case", { "case": f.case_id }));
    status.textContent = parts.join(" · ");
    if (f.rule) status.title = f.rule;
  }

  // ---- connection --------------------------------------------------------------------------
  var ws = null, ready = false, retry = 0, timer = null;

  function connect() {
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) return;
    ws = new WebSocket(wsUrl);
    ws.onopen = function () {
      retry = 0;
      var hello = { type: "hello", lang: lang, last_seq: state.last_seq };
      if (state.visitor_token) hello.visitor_token = state.visitor_token;
      if (state.conversation_id) hello.conversation_id = state.conversation_id;
      if (window.HumanlineIdentity) hello.identity = window.HumanlineIdentity;
      ws.send(JSON.stringify(hello));
    };
    ws.onmessage = function (ev) {
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      handle(f);
    };
    ws.onclose = function () {
      ready = false;
      if (!root.classList.contains("hl-open") && !state.conversation_id) return;
      status.className = "hl-status"; status.textContent = t("offline");
      clearTimeout(timer);
      timer = setTimeout(connect, Math.min(15000, 500 * Math.pow(2, retry++)));
    };
  }

  function handle(f) {
    switch (f.type) {
      case "welcome":
        if (state.conversation_id && state.conversation_id !== f.conversation_id) {
          // a new conversation (the old one was unknown or closed): start a fresh log
          state.last_seq = 0; seen = {}; log.textContent = "";
        }
        state.visitor_token = f.visitor_token;
        state.conversation_id = f.conversation_id;
        save();
        ready = true;
        showStatus(f);
        state.pending.forEach(function (p) { transmit(p); });   // resend what was never acked
        break;
      case "ack":
        var node = pendingNodes[f.client_msg_id];
        if (node) { node.classList.remove("hl-pending"); node.setAttribute("data-seq", String(f.seq)); }
        delete pendingNodes[f.client_msg_id];
        seen[f.seq] = true;
        state.pending = state.pending.filter(function (p) { return p.client_msg_id !== f.client_msg_id; });
        bump(f.seq);
        break;
      case "message":
        if (f.seq && seen[f.seq]) break;
        if (f.sender === "customer" && f.client_msg_id && pendingNodes[f.client_msg_id]) {
          pendingNodes[f.client_msg_id].classList.remove("hl-pending");
          delete pendingNodes[f.client_msg_id];
        } else {
          render(f.sender, f.text, f);
        }
        if (f.seq) { seen[f.seq] = true; bump(f.seq); }
        break;
      case "status":
        showStatus(f);
        break;
      case "error":
        render("system", f.message || f.code);
        break;
    }
  }

  function bump(seq) {
    if (seq > state.last_seq) { state.last_seq = seq; save(); }
  }

  function newId() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return "m" + Date.now().toString(36) + Math.random().toString(36).slice(2);
  }

  function transmit(p) {
    if (ws && ws.readyState === 1 && ready) {
      ws.send(JSON.stringify({ type: "message", client_msg_id: p.client_msg_id, text: p.text }));
    }
  }

  function sendText(text, shown) {
    text = String(text || "").trim();
    if (!text) return;
    var p = { client_msg_id: newId(), text: text };
    state.pending.push(p); save();
    var node = render("customer", shown || text);
    node.classList.add("hl-pending");
    pendingNodes[p.client_msg_id] = node;
    connect();
    transmit(p);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sendText(input.value);
    input.value = "";
    input.focus();
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });

  // Messages that were still pending at the last unload are shown again until acknowledged.
  state.pending.forEach(function (p) {
    var node = render("customer", p.text); node.classList.add("hl-pending"); pendingNodes[p.client_msg_id] = node;
  });
  // A returning visitor gets the history replayed from the start of the conversation.
  if (state.conversation_id) { state.last_seq = 0; }
  if (state.open || script.getAttribute("data-open") === "true") {
    if (document.body) setOpen(true); else document.addEventListener("DOMContentLoaded", function () { setOpen(true); });
  } else if (state.conversation_id) {
    connect();
  }

  window.HumanlineWidget = { open: function () { setOpen(true); }, close: function () { setOpen(false); },
                             send: sendText, state: function () { return JSON.parse(JSON.stringify(state)); } };
})();

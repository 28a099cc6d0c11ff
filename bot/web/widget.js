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
      closed: "This conversation is closed", case: "Case {case}", case_link: "Follow your case",
      human: "Talk to a person", log: "Conversation",
      rule: "Rule: {rule}", online: "{n} agents online", online_one: "1 agent online", none_online: "No agent online now",
      first_response: "answer within {minutes} min", suggestions: "Suggested replies",
      typing: "{name} is typing…",
      fatal: "The chat cannot be started right now. Please reload the page later."
    },
    "zh-Hans": {
      open: "在线客服", close: "关闭对话", title: "客户服务",
      placeholder: "请输入您的问题…", send: "发送", connecting: "正在连接…",
      offline: "连接中断，正在重连…", you: "我", bot: "智能助手", system: "通知",
      queued: "您在「{queue}」队列中", position: "第 {position} 位",
      eta: "预计等待约 {minutes} 分钟", agent: "{name} 已加入对话",
      with_agent: "正在与 {name} 对话", bot_status: "智能助手 — 随时可以要求转人工",
      closed: "对话已结束", case: "案件编号 {case}", case_link: "查看工单进度",
      human: "转人工", log: "对话记录",
      rule: "分配规则：{rule}", online: "{n} 位客服在线", online_one: "1 位客服在线", none_online: "暂无客服在线",
      first_response: "{minutes} 分钟内答复", suggestions: "建议回复", typing: "{name} 正在输入…",
      fatal: "暂时无法开始对话，请稍后刷新页面。"
    },
    "zh-Hant": {
      open: "線上客服", close: "關閉對話", title: "客戶服務",
      placeholder: "請輸入您的問題…", send: "傳送", connecting: "連線中…",
      offline: "連線中斷，正在重新連線…", you: "我", bot: "智慧助理", system: "通知",
      queued: "您在「{queue}」佇列中", position: "第 {position} 位",
      eta: "預計等候約 {minutes} 分鐘", agent: "{name} 已加入對話",
      with_agent: "正在與 {name} 對話", bot_status: "智慧助理 — 隨時可以要求轉真人客服",
      closed: "對話已結束", case: "案件編號 {case}", case_link: "查看案件進度",
      human: "轉真人客服", log: "對話紀錄",
      rule: "分配規則：{rule}", online: "{n} 位客服在線", online_one: "1 位客服在線", none_online: "暫無客服在線",
      first_response: "{minutes} 分鐘內回覆", suggestions: "建議回覆", typing: "{name} 正在輸入…",
      fatal: "暫時無法開始對話，請稍後重新整理頁面。"
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
    ".hl-status.hl-st-queued{background:#fff6db;color:#6b4e00;border-color:#f1e0a6}",
    ".hl-status.hl-st-agent{background:#e6efff;color:#123b80;border-color:#c9dafc}",
    ".hl-status.hl-st-error{background:#fde8ea;color:#8a0016;border-color:#f5c2c8}",
    ".hl-status-main{display:block;font-weight:600}",
    ".hl-status-more{display:block;font-size:12px;margin-top:1px;overflow-wrap:anywhere}",
    ".hl-case-link,.hl-link{color:inherit;text-decoration:underline;font-weight:600}",
    ".hl-link{overflow-wrap:anywhere;word-break:break-all}",
    ".hl-nw{white-space:nowrap}",
    ".hl-log{flex:1;overflow-y:auto;padding:12px;display:flex;flex-direction:column;gap:8px;background:#f6f7f9}",
    ".hl-msg{max-width:82%;padding:8px 11px;border-radius:12px;white-space:pre-wrap;word-wrap:break-word}",
    ".hl-msg .hl-who{display:block;font-size:11px;opacity:.7;margin-bottom:2px}",
    ".hl-customer{align-self:flex-end;background:#0b6e4f;color:#fff;border-bottom-right-radius:3px}",
    ".hl-bot{align-self:flex-start;background:#fff;border:1px solid #dde1e7;border-bottom-left-radius:3px}",
    ".hl-agent{align-self:flex-start;background:#e6efff;border:1px solid #c9dafc;border-bottom-left-radius:3px}",
    ".hl-system{align-self:center;background:transparent;color:#5b6473;font-size:13px;text-align:center;max-width:95%}",
    ".hl-pending{opacity:.6}",
    ".hl-root [hidden]{display:none!important}",
    ".hl-typing{padding:3px 14px;font-size:12px;font-style:italic;color:#5b6473;background:#f6f7f9}",
    ".hl-buttons{display:flex;flex-wrap:wrap;gap:6px;align-self:flex-start}",
    ".hl-buttons{max-width:92%}",
    ".hl-buttons button{border:1px solid #0b6e4f;background:#fff;color:#0b6e4f;border-radius:16px;padding:5px 12px;font:inherit;font-size:14px;cursor:pointer;min-height:32px}",
    ".hl-buttons button:hover:not(:disabled){background:#e8f3ee}",
    ".hl-buttons button:disabled{cursor:default;border-color:#c5ccd6;color:#5b6473}",
    ".hl-buttons button[aria-pressed=true]{background:#0b6e4f;border-color:#0b6e4f;color:#fff}",
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
  var typingNote = el("div", { "class": "hl-typing", "aria-live": "polite", hidden: "" });
  var form = el("form", { "class": "hl-form" });
  var input = el("textarea", { "class": "hl-input", rows: "1", "aria-label": t("placeholder"),
                                placeholder: t("placeholder"), maxlength: "4000" });
  var send = el("button", { "class": "hl-send", type: "submit" }, t("send"));
  form.appendChild(input); form.appendChild(send);
  panel.appendChild(head); panel.appendChild(status); panel.appendChild(log); panel.appendChild(typingNote);
  panel.appendChild(form);
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
  // Messages are kept in seq order whatever order the frames arrive in (a live frame can come
  // before the replay of older ones). Each item is {key, seq, nodes}: key = seq for stored
  // messages; local notices sit just after the newest seq shown when they appeared; messages not
  // yet acknowledged have no seq and stay last, in the order they were sent, until their ack.
  var items = [];
  var bySeq = {};         // seq -> item, so a replay never shows a message twice
  var pendingItems = {};  // client_msg_id -> item shown before the ack
  var payloadTitles = {}; // button payload -> its title, to show a replayed choice as the title
  var maxSeq = 0;

  function clearLog() {
    items = []; bySeq = {}; pendingItems = {}; maxSeq = 0;
    log.textContent = "";
  }

  function place(item) {
    var i = items.indexOf(item);
    if (i >= 0) items.splice(i, 1);
    var at = items.length;
    for (var j = 0; j < items.length; j++) { if (items[j].key > item.key) { at = j; break; } }
    items.splice(at, 0, item);
    var before = at + 1 < items.length ? items[at + 1].nodes[0] : null;
    item.nodes.forEach(function (n) { log.insertBefore(n, before); });
    if (item.sender === "customer") disableButtonsBefore(item.key);
    else if (item.row && items.some(function (it) { return it.sender === "customer" && it.key > item.key; })) disableRow(item.row);
    log.scrollTop = log.scrollHeight;
  }

  function setSeq(item, seq) {
    item.seq = seq; item.key = seq;
    item.nodes[0].setAttribute("data-seq", String(seq));
    item.nodes[0].classList.remove("hl-pending");
    bySeq[seq] = item;
    if (seq > maxSeq) maxSeq = seq;
    place(item);
  }

  // A choice made (or any later customer message) answers the suggestions above it.
  function disableButtonsBefore(key) {
    items.forEach(function (it) {
      if (it.row && it.key < key) disableRow(it.row);
    });
  }
  function disableRow(row) {
    var bs = row.getElementsByTagName("button");
    for (var i = 0; i < bs.length; i++) bs[i].disabled = true;
    row.setAttribute("aria-disabled", "true");
  }

  // Links to a case page (/case/HL-…#t=…) of this hub (the widget's own origin) in the bot's, an
  // agent's or a notice's text are made clickable; nothing else is (a look-alike page on another
  // host stays text, and a customer's own text never is).
  var CASE_URL = /https?:\/\/[^\s<>"]+\/case\/HL-[0-9]{8}-[0-9]{4,}#t=[A-Za-z0-9._-]+/g;
  function ours(url) {
    try { return new URL(url).origin === base.origin; } catch (e) { return false; }
  }
  function appendText(node, text, links) {
    var at = 0, m;
    CASE_URL.lastIndex = 0;
    while (links && (m = CASE_URL.exec(text))) {
      if (!ours(m[0])) continue;
      if (m.index > at) node.appendChild(document.createTextNode(text.slice(at, m.index)));
      node.appendChild(el("a", { href: m[0], target: "_blank", rel: "noopener noreferrer", "class": "hl-link" }, m[0]));
      at = m.index + m[0].length;
    }
    node.appendChild(document.createTextNode(text.slice(at)));
  }

  function makeItem(sender, text, opts) {
    opts = opts || {};
    var node = el("div", { "class": "hl-msg hl-" + sender, "data-sender": sender });
    var who = sender === "customer" ? t("you") : sender === "agent" ? (opts.agent_name || "Agent")
            : sender === "bot" ? t("bot") : t("system");
    node.appendChild(el("span", { "class": "hl-who" }, who));
    appendText(node, text, sender !== "customer");
    var item = { sender: sender, seq: null, key: Infinity, nodes: [node], row: null };
    var buttons = (opts.buttons || []).filter(function (b) { return b && (b.title || b.payload); });
    if (buttons.length) {
      var row = el("div", { "class": "hl-buttons", role: "group", "aria-label": t("suggestions") });
      buttons.forEach(function (b) {
        var title = String(b.title || b.payload), payload = String(b.payload || b.title);
        payloadTitles[payload] = title;
        var btn = el("button", { type: "button", "data-payload": payload }, title);
        btn.addEventListener("click", function () {
          if (btn.disabled) return;
          btn.setAttribute("aria-pressed", "true");
          disableRow(row);
          sendText(payload, title);
        });
        row.appendChild(btn);
      });
      item.row = row;
      item.nodes.push(row);
    }
    return item;
  }

  function addStored(f) {
    if (!f.seq || bySeq[f.seq]) return;           // already shown (replay, second tab, ack)
    if (f.sender === "customer" && f.client_msg_id && pendingItems[f.client_msg_id]) {
      settle(f.client_msg_id, f.seq);              // our own message, stored before the ack was lost
      return;
    }
    var text = f.text;
    if (f.sender === "customer" && payloadTitles[text]) text = payloadTitles[text];
    var item = makeItem(f.sender, text, f);
    setSeq(item, f.seq);
  }

  function addNotice(text) {
    var item = makeItem("system", text);
    item.key = maxSeq + 0.5;
    place(item);
  }

  function addPending(p) {
    var item = makeItem("customer", p.shown || p.text);
    item.nodes[0].classList.add("hl-pending");
    pendingItems[p.client_msg_id] = item;
    place(item);
  }

  function settle(client_msg_id, seq) {
    var item = pendingItems[client_msg_id];
    delete pendingItems[client_msg_id];
    state.pending = state.pending.filter(function (p) { return p.client_msg_id !== client_msg_id; });
    if (item && !bySeq[seq]) setSeq(item, seq);
    else if (item) { item.nodes.forEach(function (n) { n.remove(); }); items.splice(items.indexOf(item), 1); }
    advance(seq);
  }

  // state.last_seq: the highest seq up to which every message has been received, so a
  // reconnect asks for whatever is still missing even when a newer frame came first.
  function advance(seq) {
    if (seq > maxSeq) maxSeq = seq;
    var n = state.last_seq;
    while (bySeq[n + 1]) n++;
    if (n !== state.last_seq) { state.last_seq = n; }
    save();
  }

  function minutes(secs) { return Math.max(1, Math.round(secs / 60)); }

  // "Alice is typing…" for a few seconds after each typing frame, until her message arrives.
  var typingTimer = null;
  function showTyping(name) {
    typingNote.textContent = t("typing", { name: name || "Agent" });
    typingNote.hidden = false;
    clearTimeout(typingTimer);
    typingTimer = setTimeout(hideTyping, 4000);
  }
  function hideTyping() { clearTimeout(typingTimer); typingNote.hidden = true; }

  var holder = "bot";     // who holds the conversation, from the last status frame
  function showStatus(f) {
    holder = f.status;
    if (f.status !== "agent") hideTyping();
    status.className = "hl-status hl-st-" + f.status;   // hl-st-*: not the bubbles' hl-bot/hl-agent
    status.textContent = "";
    var main = [], details = [];
    if (f.status === "queued") {
      main.push(t("queued", { queue: f.queue_display || f.queue || "" }));
      if (f.position) main.push(t("position", { position: f.position }));
      if (f.eta_seconds != null) main.push(t("eta", { minutes: minutes(f.eta_seconds) }));
      if (f.rule) details.push(t("rule", { rule: f.rule }));
      if (f.agents_online === 0) {
        details.push(t("none_online") + (f.first_response_minutes ? " — " + t("first_response", { minutes: f.first_response_minutes }) : ""));
      } else {
        if (f.agents_online != null) details.push(t(f.agents_online === 1 ? "online_one" : "online", { n: f.agents_online }));
        if (f.first_response_minutes) details.push(t("first_response", { minutes: f.first_response_minutes }));
      }
    } else if (f.status === "agent") {
      main.push(t("with_agent", { name: f.agent_name || "" }));
    } else if (f.status === "closed") {
      main.push(t("closed"));
    } else {
      main.push(t("bot_status"));
    }
    if (f.case_id) details.push(t("case", { "case": f.case_id }));
    status.appendChild(el("span", { "class": "hl-status-main" }, main.join(" · ")));
    if (!details.length) return;
    var more = el("span", { "class": "hl-status-more" });
    details.forEach(function (d, i) {   // the rule may wrap; short parts (case number…) stay whole
      if (i) more.appendChild(document.createTextNode(" · "));
      more.appendChild(el("span", d.length < 40 ? { "class": "hl-nw" } : null, d));
    });
    if (f.case_id && /^https?:\/\//.test(f.case_url || "")) {   // the signed link to the case page
      more.appendChild(document.createTextNode(" · "));
      more.appendChild(el("a", { href: f.case_url, target: "_blank", rel: "noopener noreferrer",
                                 "class": "hl-case-link hl-nw" }, t("case_link")));
    }
    status.appendChild(more);
  }

  function showFatal() {
    status.className = "hl-status hl-st-error";
    status.textContent = t("fatal");
    addNotice(t("fatal"));
  }

  // ---- connection --------------------------------------------------------------------------
  var ws = null, ready = false, retry = 0, timer = null;
  var fresh = false;      // this connection is the one fresh start after a rejected token
  var stopped = false;    // rejected twice: no more attempts until the page is reloaded

  function connect() {
    if (stopped) return;
    if (ws && (ws.readyState === 0 || ws.readyState === 1)) return;
    var sock = ws = new WebSocket(wsUrl);
    sock.onopen = function () {
      retry = 0;
      var hello = { type: "hello", lang: lang, last_seq: state.last_seq };
      if (state.visitor_token) hello.visitor_token = state.visitor_token;
      if (state.conversation_id) hello.conversation_id = state.conversation_id;
      if (window.HumanlineIdentity) hello.identity = window.HumanlineIdentity;
      sock.send(JSON.stringify(hello));
    };
    sock.onmessage = function (ev) {
      if (sock !== ws) return;
      var f;
      try { f = JSON.parse(ev.data); } catch (e) { return; }
      handle(f);
    };
    sock.onclose = function (ev) {
      if (sock !== ws) return;
      ready = false;
      clearTimeout(timer);
      if (ev.code === 4001 || ev.code === 4003) {
        // The token, identity or conversation was refused (e.g. the server's secret changed):
        // forget them and start a new conversation — once; refused again means stop.
        if (fresh) { stopped = true; showFatal(); return; }
        fresh = true;
        delete state.visitor_token; delete state.conversation_id;
        state.last_seq = 0; save();
        clearLog();
        state.pending.forEach(addPending);   // what the customer typed still goes out
        status.className = "hl-status"; status.textContent = t("connecting");
        // A closed widget starts its new conversation only when opened (or something waits to go).
        if (root.classList.contains("hl-open") || state.pending.length) connect();
        return;
      }
      if (!root.classList.contains("hl-open") && !state.conversation_id) return;
      status.className = "hl-status"; status.textContent = t("offline");
      // Exponential backoff with jitter: after a hub restart the widgets do not all come back at once.
      timer = setTimeout(connect, Math.min(15000, 500 * Math.pow(2, retry++) * (0.5 + Math.random())));
    };
  }

  function handle(f) {
    switch (f.type) {
      case "welcome":
        if (state.conversation_id && state.conversation_id !== f.conversation_id) {
          // a new conversation (the old one was unknown or closed): start a fresh log
          state.last_seq = 0;
          clearLog();
          state.pending.forEach(addPending);
        }
        fresh = false;
        state.visitor_token = f.visitor_token;
        state.conversation_id = f.conversation_id;
        save();
        ready = true;
        showStatus(f);
        state.pending.forEach(function (p) { transmit(p); });   // resend what was never acked
        break;
      case "ack":
        settle(f.client_msg_id, f.seq);
        break;
      case "message":
        addStored(f);
        if (f.seq) advance(f.seq);
        if (f.sender === "agent") hideTyping();
        break;
      case "typing":
        if (f.sender === "agent") showTyping(f.agent_name);
        break;
      case "status":
        showStatus(f);
        break;
      case "error":
        // refused credentials are handled when the socket closes (4001/4003)
        if (f.code !== "unauthorized" && f.code !== "forbidden") addNotice(f.message || f.code);
        break;
    }
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
    if (shown && shown !== text) p.shown = String(shown);
    state.pending.push(p); save();
    addPending(p);
    connect();
    transmit(p);
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    sendText(input.value);
    input.value = "";
    input.focus();
  });
  // The agent sees "typing…": at most one signal every 2 s, only while an agent holds the chat.
  var typingSentAt = 0;
  input.addEventListener("input", function () {
    var now = Date.now();
    if (holder !== "agent" || !ready || !input.value.trim() || now - typingSentAt < 2000) return;
    if (ws && ws.readyState === 1) { ws.send(JSON.stringify({ type: "typing" })); typingSentAt = now; }
  });
  input.addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); form.requestSubmit(); }
  });

  // Messages that were still pending at the last unload are shown again (last, below the
  // replayed history) until acknowledged.
  state.pending.forEach(addPending);
  // A returning visitor gets the history replayed from the start of the conversation.
  if (state.conversation_id) { state.last_seq = 0; }
  if (state.open || script.getAttribute("data-open") === "true") {
    if (document.body) setOpen(true); else document.addEventListener("DOMContentLoaded", function () { setOpen(true); });
  } else if (state.conversation_id) {
    connect();
  }

  // The public API never hands out the visitor token: it is a bearer credential, and any script
  // on the page can call this (docs/security.md).
  function publicState() {
    var copy = JSON.parse(JSON.stringify(state));
    delete copy.visitor_token;
    return copy;
  }
  window.HumanlineWidget = { open: function () { setOpen(true); }, close: function () { setOpen(false); },
                             send: sendText, state: function () { return publicState(); } };
})();

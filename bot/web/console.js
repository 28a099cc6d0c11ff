/*
 * Humanline agent console. Talks to the hub's REST API (login, supervisor overview) and to the
 * agent WebSocket /ws/agent (docs/hub.md lists the frames). Every piece of customer text is put
 * on the page with textContent, never innerHTML, so a customer cannot inject markup.
 * Agent events carry an increasing event_id; on reconnect the console sends the last one it saw
 * and the hub replays what was missed.
 */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var session = null;           // {token, agent}
  try { session = JSON.parse(sessionStorage.getItem("humanline:agent")); } catch (e) { session = null; }
  var ws = null, lastEventId = 0, retry = 0;
  var queues = [];              // [{name, display, waiting, oldest_wait_s, first_response_minutes}]
  var waiting = {};             // conversation_id -> handoff frame
  var mine = {};                // conversation_id -> {transcript:[], case:{}, customer}
  var current = null;           // conversation_id shown
  var agents = [];              // every agent's load: [{id, display_name, online, load, max_concurrent, …}]
  var typingUntil = {};         // conversation_id -> when its "customer is typing…" ends (ms)

  // Extensions loaded after this file (canned.js) hook in here: they see every frame, every change
  // of the open conversation, and each reply frame before it is sent (returning false holds it).
  var ext = window.HumanlineConsole = {
    current: function () { return current && mine[current] ? current : null; },
    agent: function () { return session && session.agent; },
    send: function (f) { sendFrame(f); },
    el: function (tag, cls, text) { return el(tag, cls, text); },   // the DOM helpers, shared
    clear: function (node) { clear(node); },
    onFrame: [], onConversation: [], beforeSend: []
  };

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function fmtSecs(s) {
    s = Math.max(0, Math.round(s)); var m = Math.floor(s / 60), r = s % 60;
    return m + ":" + (r < 10 ? "0" : "") + r;
  }
  function ms(iso) {
    var d = iso ? new Date(iso).getTime() : NaN;
    return isNaN(d) ? null : d;
  }
  // "7 min", "45 s", "3 h 20 min", "2 d 4 h": a span of time in words, for SLA countdowns.
  function span(secs, up) {
    var round = up ? Math.ceil : Math.floor;
    if (secs < 60) return round(secs) + " s";
    var m = round(secs / 60);
    if (m < 60) return m + " min";
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 48) return h + " h" + (m ? " " + m + " min" : "");
    return Math.floor(h / 24) + " d" + (h % 24 ? " " + (h % 24) + " h" : "");
  }
  // A node that counts down to data-deadline (ms since the epoch); the ticker below refreshes it.
  function countdown(cls, deadline, prefix) {
    var node = el("span", cls);
    node.setAttribute("data-deadline", String(deadline));
    node.setAttribute("data-prefix", prefix || "");
    node.title = new Date(deadline).toLocaleString();
    tick(node, Date.now());
    return node;
  }
  function tick(node, now) {
    var left = (parseFloat(node.getAttribute("data-deadline")) - now) / 1000;
    var prefix = node.getAttribute("data-prefix");
    if (node.getAttribute("data-style") === "queue") {
      node.textContent = left < 0 ? " · SLA breached " + fmtSecs(-left) : " · SLA " + fmtSecs(left);
    } else {
      node.textContent = prefix + (left < 0 ? "overdue by " + span(-left, false) : "due in " + span(left, true));
    }
    node.classList.toggle("breach", left < 0);
  }
  function when(iso) {
    if (!iso) return null;
    var d = new Date(iso);
    return isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
  }
  function queueName(q) {
    if (!q) return "";
    var found = queues.filter(function (x) { return x.name === q; })[0];
    return found && found.display ? (found.display.en || found.display) : q;
  }

  // ---- login -------------------------------------------------------------------------------
  $("login-form").addEventListener("submit", function (e) {
    e.preventDefault();
    $("login-error").textContent = "";
    fetch("/api/agents/login", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ username: $("login-username").value, password: $("login-password").value })
    }).then(function (r) {
      return r.json().then(function (body) { return { ok: r.ok, body: body }; });
    }).then(function (res) {
      if (!res.ok) { $("login-error").textContent = res.body.message || res.body.error || "Login failed"; return; }
      session = { token: res.body.token, agent: res.body.agent };
      sessionStorage.setItem("humanline:agent", JSON.stringify(session));
      start();
    }).catch(function () { $("login-error").textContent = "The server cannot be reached."; });
  });

  function start() {
    $("login-view").hidden = true;
    $("app-view").hidden = false;
    $("me").textContent = session.agent.display_name + " (" + session.agent.username + ")";
    if (session.agent.role === "supervisor") $("supervisor-toggle").hidden = false;
    connect();
  }

  // ---- socket ------------------------------------------------------------------------------
  function connect() {
    var url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/agent";
    ws = new WebSocket(url);
    $("conn").textContent = "connecting…";
    ws.onopen = function () {
      retry = 0;
      ws.send(JSON.stringify({ type: "auth", token: session.token, last_event_id: lastEventId || undefined }));
    };
    ws.onmessage = function (ev) {
      var f; try { f = JSON.parse(ev.data); } catch (e) { return; }
      if (f.event_id && f.event_id > lastEventId) lastEventId = f.event_id;
      handle(f);
    };
    ws.onclose = function (ev) {
      $("conn").textContent = "disconnected — reconnecting…";
      if (ev.code === 4001) { logout("Your session has expired. Please log in again."); return; }
      setTimeout(connect, Math.min(10000, 500 * Math.pow(2, retry++)));
    };
  }
  function sendFrame(f) { if (ws && ws.readyState === 1) ws.send(JSON.stringify(f)); }
  function logout(msg) {
    sessionStorage.removeItem("humanline:agent"); session = null;
    $("app-view").hidden = true; $("login-view").hidden = false; $("login-error").textContent = msg || "";
  }

  function handle(f) {
    ext.onFrame.forEach(function (fn) { fn(f); });
    switch (f.type) {
      case "ready":
        $("conn").textContent = "connected";
        // The stored availability, not the checkbox's default: an agent who went away stays away.
        if (f.agent) { $("available").checked = !!f.agent.available; session.agent = f.agent; }
        // The snapshot replaces whatever this console had (conversations may have been released,
        // claimed or resolved while it was away); missed events then replay on top of it.
        queues = f.queues || [];
        waiting = {};
        (f.waiting || []).forEach(function (w) { waiting[w.conversation_id] = w; });
        mine = {};
        (f.conversations || []).forEach(function (c) {
          mine[c.conversation_id] = { transcript: sortedBySeq(c.transcript || []), case: c.case || null,
                                      summary: c.summary || null };
        });
        if (current && !mine[current]) current = null;
        if (f.agents) agents = f.agents;
        renderQueues(); renderLists(); renderCurrent(); renderAgents();
        break;
      case "queue":
        queues = f.queues || queues;
        if (f.waiting) { waiting = {}; f.waiting.forEach(function (w) { waiting[w.conversation_id] = w; }); }
        if (f.agents) { agents = f.agents; renderAgents(); }
        renderQueues(); renderLists();
        break;
      case "typing":
        if (f.sender !== "customer" || !mine[f.conversation_id]) break;
        typingUntil[f.conversation_id] = Date.now() + 4000;
        renderTyping();
        setTimeout(renderTyping, 4100);
        break;
      case "agent_capacity":
        $("capacity-msg").className = "case-msg";
        $("capacity-msg").textContent = "Saved: " + f.agent.display_name + " — " +
          (f.agent.max_concurrent == null ? "default limit" : "limit " + f.agent.max_concurrent) +
          (f.agent.allow_overflow ? ", may claim above it" : "");
        break;
      case "handoff":
        waiting[f.conversation_id] = f; renderLists();
        break;
      case "assigned":
        delete waiting[f.conversation_id];
        var had = mine[f.conversation_id];   // a replayed event after a newer snapshot: merge
        mine[f.conversation_id] = { transcript: sortedBySeq((had ? had.transcript : []).concat(f.transcript || [])),
                                    case: f.case || (had && had.case) || null,
                                    summary: f.summary || (had && had.summary) || null };
        current = f.conversation_id;
        renderLists(); renderCurrent();
        break;
      case "message":
        var conv = mine[f.conversation_id];
        if (!conv) break;
        if (f.seq && conv.transcript.some(function (m) { return m.seq === f.seq; })) break;
        conv.transcript = sortedBySeq(conv.transcript.concat([f]));
        if (f.sender === "customer") { delete typingUntil[f.conversation_id]; renderTyping(); }
        // The hub also pushes the case when the first human answer is recorded; stopping the
        // first-response countdown here as well keeps the panel right without waiting for it.
        if (f.sender === "agent" && conv.case && !conv.case.first_responded_at) {
          conv.case.first_responded_at = f.ts || new Date().toISOString();
        }
        if (f.conversation_id === current) renderCurrent(); else renderLists();
        break;
      case "nlu":
        // The intent of a customer message the bot never handled, parsed after it arrived.
        var held = mine[f.conversation_id];
        if (!held) break;
        held.transcript.forEach(function (m) {
          if (m.seq === f.seq && m.sender === "customer") { m.intent = f.intent; m.confidence = f.confidence; }
        });
        if (f.conversation_id === current) renderCurrent();
        break;
      case "case":
        if (mine[f.conversation_id]) { mine[f.conversation_id].case = f.case; if (f.conversation_id === current) renderCase(); }
        if (caseWait && caseWait.cid === f.conversation_id) { caseDone(caseWait, null); caseWait = null; }
        break;
      case "released":
        // Resolved (our answer), or taken away meanwhile: the dialog is about a conversation gone.
        if (resolveWait === f.conversation_id || current === f.conversation_id) closeResolveDialog();
        delete mine[f.conversation_id];
        delete waiting[f.conversation_id];
        if (current === f.conversation_id) { current = null; renderCurrent(); }
        renderLists();
        break;
      case "claimed":
        delete waiting[f.conversation_id]; renderLists();
        break;
      case "error":
        $("conn").textContent = "error: " + (f.message || f.code);
        if (f.code === "at_capacity" || capacityWait) {
          $("capacity-msg").className = "case-msg error"; $("capacity-msg").textContent = f.message || f.code;
          capacityWait = false;
        }
        if (resolveWait && f.conversation_id === resolveWait) {
          resolveError(f.message || f.code); $("resolve-confirm").disabled = false;
        }
        if (caseWait && (!f.conversation_id || f.conversation_id === caseWait.cid)) {
          caseDone(caseWait, f.message || f.code); caseWait = null;
        }
        break;
    }
  }

  // Messages keyed by seq: no duplicates, in seq order whatever order they arrived in.
  function sortedBySeq(list) {
    var bySeq = {}, loose = [];
    list.forEach(function (m) { if (m.seq) bySeq[m.seq] = m; else loose.push(m); });
    return Object.keys(bySeq).map(Number).sort(function (a, b) { return a - b; })
      .map(function (k) { return bySeq[k]; }).concat(loose);
  }

  // ---- rendering ---------------------------------------------------------------------------
  function renderQueues() {
    var list = $("queue-list"); clear(list);
    var sel = $("transfer-queue"); clear(sel);
    queues.forEach(function (q) {
      var li = el("li");
      li.appendChild(el("span", null, queueName(q.name)));
      var right = el("span", "sla");
      right.textContent = (q.waiting || 0) + " waiting";
      if (q.oldest_wait_s != null && q.waiting) {
        var due = (q.first_response_minutes || 10) * 60 - q.oldest_wait_s;
        var sla = el("span");
        sla.setAttribute("data-style", "queue");
        sla.setAttribute("data-deadline", String(Date.now() + due * 1000));
        tick(sla, Date.now());
        right.appendChild(sla);
      }
      li.appendChild(right);
      list.appendChild(li);
      var opt = el("option", null, queueName(q.name)); opt.value = q.name; sel.appendChild(opt);
    });
  }
  // SLA countdowns (queues, waiting conversations, the case panel) tick locally every second.
  setInterval(function () {
    var nodes = document.querySelectorAll("[data-deadline]"), now = Date.now();
    for (var i = 0; i < nodes.length; i++) tick(nodes[i], now);
  }, 1000);

  function renderLists() {
    var wl = $("waiting-list"); clear(wl);
    Object.keys(waiting).forEach(function (id) {
      var w = waiting[id];
      var li = el("li");
      var info = el("span");
      info.appendChild(el("span", null, queueName(w.queue)));
      info.appendChild(el("br"));
      info.appendChild(el("span", "meta", (w.reason || "") + (w.case_id ? " · " + w.case_id : "")));
      if (w.held) {  // suspected automated: waits for a supervisor (docs/security.md, 1b)
        info.appendChild(el("br"));
        info.appendChild(el("span", "meta held", "held: suspected automated" + (w.source ? " · " + w.source : "")));
      }
      var q = queues.filter(function (x) { return x.name === w.queue; })[0];
      var since = ms(w.ts);
      if (since != null) {
        info.appendChild(el("br"));
        info.appendChild(countdown("meta sla-due", since + ((q && q.first_response_minutes) || 10) * 60000, "first response "));
      }
      li.appendChild(info);
      var b = el("button", null, "Claim");
      b.setAttribute("data-claim", id);
      b.addEventListener("click", function () { sendFrame({ type: "claim", conversation_id: id }); });
      li.appendChild(b);
      if (w.held && session && session.agent.role === "supervisor") {
        var r = el("button", null, "Release");
        r.setAttribute("data-release", id);
        r.addEventListener("click", function () { sendFrame({ type: "release_held", conversation_id: id }); });
        li.appendChild(r);
      }
      wl.appendChild(li);
    });
    var ml = $("mine-list"); clear(ml);
    Object.keys(mine).forEach(function (id) {
      var li = el("li", id === current ? "active" : null);
      var last = mine[id].transcript[mine[id].transcript.length - 1];
      li.appendChild(el("span", null, (mine[id].case && mine[id].case.number) || id.slice(0, 8)));
      li.appendChild(el("span", "meta", last ? last.text.slice(0, 30) : ""));
      li.tabIndex = 0;
      li.addEventListener("click", function () { current = id; renderLists(); renderCurrent(); });
      li.addEventListener("keydown", function (e) { if (e.key === "Enter") { current = id; renderLists(); renderCurrent(); } });
      ml.appendChild(li);
    });
  }

  // Each agent's load (held / limit); supervisors can change an agent's limit and overflow here.
  var capacityWait = false;
  function renderAgents() {
    var list = $("agent-list"); clear(list);
    var me = session && session.agent, sup = me && me.role === "supervisor";
    agents.forEach(function (a) {
      var li = el("li");
      li.setAttribute("data-agent", String(a.id));
      li.appendChild(el("span", "name" + (a.online ? "" : " offline"),
                        a.display_name + (a.online ? (a.available ? "" : " (away)") : " (offline)")));
      var load = el("span", "load" + (a.load >= a.max_concurrent ? " full" : ""), a.load + " / " + a.max_concurrent);
      load.title = a.load + " conversations held, limit " + a.max_concurrent;
      li.appendChild(load);
      if (sup) {
        var form = el("form");
        var limit = el("input"); limit.type = "number"; limit.min = "1"; limit.max = "100";
        limit.value = a.own_max_concurrent == null ? "" : String(a.own_max_concurrent);
        limit.placeholder = "default";
        limit.setAttribute("aria-label", "Limit for " + a.display_name);
        var over = el("input"); over.type = "checkbox"; over.checked = !!a.allow_overflow;
        over.setAttribute("aria-label", a.display_name + " may claim above the limit");
        var overLabel = el("label"); overLabel.appendChild(over); overLabel.appendChild(document.createTextNode(" may exceed"));
        var save = el("button", null, "Set"); save.type = "submit";
        form.appendChild(el("span", null, "Limit")); form.appendChild(limit); form.appendChild(overLabel); form.appendChild(save);
        form.addEventListener("submit", function (e) {
          e.preventDefault();
          var n = limit.value.trim() === "" ? null : parseInt(limit.value, 10);
          capacityWait = true;
          sendFrame({ type: "set_capacity", agent_id: a.id, max_concurrent: n, allow_overflow: over.checked });
        });
        li.appendChild(form);
      }
      list.appendChild(li);
      if (me && a.id === me.id) {
        $("my-load").textContent = a.load + " / " + a.max_concurrent + " conversations";
        $("my-load").classList.toggle("full", a.load >= a.max_concurrent);
      }
    });
  }

  // The handoff summary above the transcript: what was asked (with its entities), signals, what
  // the bot did, why it was handed over, the customer's language. Text only, never markup.
  var ENTITY_NAMES = { case_id: "case", order_id: "order", amount: "amount", plan: "plan", phone: "phone" };
  function renderSummary() {
    var box = $("summary"), list = $("summary-list"); clear(list);
    var s = current && mine[current] && mine[current].summary;
    box.hidden = !s;
    if (!s) return;
    function row(label, node) { list.appendChild(el("dt", null, label)); var dd = el("dd"); dd.appendChild(node); list.appendChild(dd); }
    function items(values, fill) {
      var ul = el("ul");
      values.forEach(function (v) { var li = el("li"); fill(li, v); ul.appendChild(li); });
      return ul;
    }
    if (s.reason_text) row("Handed over", el("span", "reason", s.reason_text));
    row("Language", el("span", null, s.language || s.lang));
    if (s.requests && s.requests.length) {
      row("Asked", items(s.requests, function (li, r) {
        li.appendChild(el("strong", null, r.label));
        li.appendChild(el("span", "quote", " “" + r.text + "” "));
        Object.keys(r.entities || {}).forEach(function (k) {
          li.appendChild(el("span", "entity", (ENTITY_NAMES[k] || k) + " " + r.entities[k]));
        });
      }));
    }
    if (s.signals && s.signals.length) {
      row("Signals", items(s.signals, function (li, g) {
        li.appendChild(el("span", "signal", g.kind));
        li.appendChild(el("span", "quote", " " + (g.seq ? "“" + g.text + "”" : g.text)));
      }));
    }
    if (s.bot_did && s.bot_did.length) row("Bot did", items(s.bot_did, function (li, d) { li.textContent = d; }));
    if (s.questions && s.questions.length) {
      row("Bot asked", items(s.questions, function (li, q) {
        li.appendChild(el("span", null, q.question));
        li.appendChild(el("span", "quote", " → " + (q.answer || "not answered")));
      }));
    }
  }

  function renderTyping() {
    var until = current && typingUntil[current];
    $("typing").hidden = !(until && until > Date.now());
  }

  var shown = null;              // the conversation the case message line belongs to
  function renderCurrent() {
    var tr = $("transcript"); clear(tr);
    if (shown !== current) { shown = current; caseWait = null; caseMsg(""); }
    if (!current || !mine[current]) {
      $("chat-title").textContent = "Conversation"; renderSummary(); renderTyping(); renderCase();
      ext.onConversation.forEach(function (fn) { fn(null); }); return;
    }
    renderSummary();
    $("chat-title").textContent = "Conversation " + current.slice(0, 8);
    mine[current].transcript.forEach(function (m) {
      var node = el("div", "msg " + m.sender);
      node.setAttribute("data-sender", m.sender);
      node.appendChild(el("span", "who", m.sender === "agent" ? (m.agent_name || "Agent") : m.sender));
      node.appendChild(document.createTextNode(m.text));
      if (m.sender === "customer" && m.intent) {
        node.appendChild(el("br"));
        node.appendChild(el("span", "nlu", m.intent + (m.confidence != null ? " " + Math.round(m.confidence * 100) + "%" : "")));
      }
      tr.appendChild(node);
    });
    tr.scrollTop = tr.scrollHeight;
    renderTyping();
    renderCase();
    ext.onConversation.forEach(function (fn) { fn(current); });
  }

  // A plan change as recorded, with its state today: a scheduled change is shown as pending,
  // never as the customer's current plan.
  var PLAN_STATES = { pending: "PENDING — not in effect until", in_effect: "in effect since",
                      withdrawn: "WITHDRAWN — was due", replaced: "REPLACED — was due" };
  function planChange(p) {
    if (!p) return null;
    var text = p.kind + ": " + (p.from_plan || "none") + " → " + (p.to_plan || "none") + " · " +
               (PLAN_STATES[p.state] || p.state) + " " + p.effective_date;
    if (p.state === "pending") text += " (customer stays on " + (p.from_plan || "none") + " until then)";
    if (p.replaced_by) text += " by " + p.replaced_by;
    return text;
  }

  function renderCase() {
    var panel = $("case-panel"); clear(panel);
    var c = current && mine[current] && mine[current].case;
    $("case-actions").hidden = !c;
    if (!c) { panel.appendChild(el("p", "muted", "No case for this conversation.")); return; }
    var dl = el("dl");
    function row(label, value, id) {
      if (value == null || value === "") return;
      var dd = el("dd");
      if (id) dd.id = id;
      if (typeof value === "string" || typeof value === "number") dd.textContent = String(value); else dd.appendChild(value);
      dl.appendChild(el("dt", null, label)); dl.appendChild(dd);
    }
    function clock(doneAt, doneWord, dueAt) {
      if (doneAt) return doneWord + " " + when(doneAt);
      var due = ms(dueAt);
      return due == null ? null : countdown("countdown", due, "");
    }
    row("Number", c.number); row("Category", c.category); row("Queue", queueName(c.queue)); row("Stage", c.stage);
    row("First response", clock(c.first_responded_at, "answered", c.first_response_due_at), "sla-first-response");
    row("Progress update", clock(c.resolved_at, "resolved", c.next_update_due_at), "sla-next-update");
    row("Reopened", c.reopen_count || null);
    row("Plan change", planChange(c.plan_change), "plan-change");
    panel.appendChild(dl);
    if (c.timeline && c.timeline.length) {
      panel.appendChild(el("strong", null, "Timeline"));
      var ol = el("ol");
      c.timeline.forEach(function (ev) {
        ol.appendChild(el("li", null, (when(ev.created_at) || "") + " — " + ev.kind + (ev.to_stage ? " → " + ev.to_stage : "") +
                                      " (" + ev.actor + ")" + (ev.detail ? ": " + ev.detail : "")));
      });
      panel.appendChild(ol);
    }
  }

  // ---- actions -----------------------------------------------------------------------------
  var counter = 0;
  $("reply-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("reply-text").value.trim();
    if (!text || !current) return;
    var frame = { type: "message", conversation_id: current, text: text, client_msg_id: "a" + Date.now() + "-" + (counter++) };
    if (ext.beforeSend.some(function (fn) { return fn(frame) === false; })) return;
    sendFrame(frame);
    $("reply-text").value = "";
  });
  // The customer sees "… is typing": at most one signal every 2 s per conversation.
  var typingSentAt = {};
  $("reply-text").addEventListener("input", function () {
    var now = Date.now();
    if (!current || !$("reply-text").value.trim() || now - (typingSentAt[current] || 0) < 2000) return;
    typingSentAt[current] = now;
    sendFrame({ type: "typing", conversation_id: current });
  });
  $("reply-text").addEventListener("keydown", function (e) {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("reply-form").requestSubmit(); }
  });
  $("transfer-btn").addEventListener("click", function () {
    if (current) sendFrame({ type: "transfer", conversation_id: current, queue: $("transfer-queue").value });
  });
  $("handback-btn").addEventListener("click", function () {
    if (current) sendFrame({ type: "hand_back", conversation_id: current });
  });
  // Resolve: with an open case the agent decides what happens to it (resolve it too, with a
  // resolution the customer sees, or keep it open); the dialog stays until the hub answers
  // (`released`: done; `error`: shown in the dialog, nothing changed). Without an open case: as before.
  var resolveWait = null;       // the conversation id whose resolve the dialog waits for
  function openCase(cid) {
    var c = cid && mine[cid] && mine[cid].case;
    return c && c.stage !== "resolved" && c.stage !== "confirmed" ? c : null;
  }
  function resolveChoice() { return $("resolve-keep").checked ? "keep" : "resolve"; }
  function resolveError(text) {
    $("resolve-error").textContent = text || "";
    $("resolve-text").setAttribute("aria-invalid", text && resolveChoice() === "resolve" ? "true" : "false");
  }
  function syncResolveChoice() {
    var keep = resolveChoice() === "keep";
    $("resolve-text-box").hidden = keep; $("resolve-text").disabled = keep;
    $("resolve-confirm").textContent = keep ? "Resolve the chat, keep the case" : "Resolve chat and case";
    resolveError("");
  }
  function closeResolveDialog() {
    resolveWait = null;
    if ($("resolve-dialog").open) $("resolve-dialog").close();
  }
  $("resolve-btn").addEventListener("click", function () {
    if (!current) return;
    var c = openCase(current);
    if (!c) { sendFrame({ type: "resolve", conversation_id: current }); return; }
    $("resolve-case").textContent = c.number;
    $("resolve-form").reset(); $("resolve-confirm").disabled = false;
    syncResolveChoice();
    $("resolve-dialog").showModal();
    $("resolve-case-too").focus();
  });
  $("resolve-case-too").addEventListener("change", syncResolveChoice);
  $("resolve-keep").addEventListener("change", syncResolveChoice);
  $("resolve-cancel").addEventListener("click", closeResolveDialog);
  $("resolve-dialog").addEventListener("close", function () { resolveWait = null; });
  $("resolve-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!current) { closeResolveDialog(); return; }
    var frame = { type: "resolve", conversation_id: current };
    if (resolveChoice() === "resolve") {
      var text = $("resolve-text").value.trim();
      if (!text) { resolveError("Write the resolution the customer will see."); $("resolve-text").focus(); return; }
      frame.case = { resolution: text };
    }
    if (!ws || ws.readyState !== 1) { resolveError("Not connected — try again in a moment."); return; }
    resolveError(""); $("resolve-confirm").disabled = true;
    resolveWait = current;
    sendFrame(frame);
  });
  $("available").addEventListener("change", function () {
    sendFrame({ type: "availability", available: $("available").checked });
  });
  // Case actions are answered by a `case` event (saved: the form is cleared) or an `error` frame
  // (shown beside the forms; what the agent typed stays for another try).
  var caseWait = null;          // {form, what} of the case action waiting for its answer
  function caseMsg(text, isError) {
    var m = $("case-msg"); m.textContent = text || ""; m.className = "case-msg" + (isError ? " error" : "");
  }
  function caseAction(form, what, frame) {
    var c = current && mine[current] && mine[current].case;
    if (!c) { caseMsg("This conversation has no case.", true); return; }
    frame.conversation_id = current; frame.case_number = c.number;
    if (!ws || ws.readyState !== 1) { caseMsg("Not connected — try again in a moment.", true); return; }
    caseWait = { form: form, what: what, cid: current };
    caseMsg(what + "…", false);
    sendFrame(frame);
  }
  function caseDone(wait, error) {
    if (error) { caseMsg(wait.what + " failed: " + error, true); return; }
    if (wait.form && wait.form.id !== "stage-form") wait.form.reset();
    caseMsg(wait.what + " — saved.", false);
  }
  $("stage-form").addEventListener("submit", function (e) {
    e.preventDefault();
    caseAction(this, "Stage change", { type: "case_stage", stage: $("stage-select").value });
  });
  $("note-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("note-text").value.trim();
    if (!text) { caseMsg("Write the note first.", true); $("note-text").focus(); return; }
    caseAction(this, "Note", { type: "note", text: text });
  });
  $("progress-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var text = $("progress-text").value.trim();
    if (!text) { caseMsg("Describe the progress for the customer's case first.", true); $("progress-text").focus(); return; }
    caseAction(this, "Progress update", { type: "case_progress", text: text });
  });
  $("extend-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var reason = $("extend-reason").value.trim(), hours = parseFloat($("extend-hours").value);
    if (!(hours > 0)) { caseMsg("Give the extension in hours (more than 0).", true); $("extend-hours").focus(); return; }
    if (!reason) { caseMsg("A reason is required to extend the deadline.", true); $("extend-reason").focus(); return; }
    caseAction(this, "Extension", { type: "case_extend", reason: reason, hours: hours });
  });

  // ---- supervisor --------------------------------------------------------------------------
  $("supervisor-toggle").addEventListener("click", function () {
    var view = $("supervisor-view");
    view.hidden = !view.hidden;
    // The view opens below the columns: bring it on screen, or the click seems to do nothing.
    if (!view.hidden) { loadOverview(); view.scrollIntoView({ block: "start" }); }
  });
  function table(node, headers, rows) {
    clear(node);
    var tr = el("tr"); headers.forEach(function (h) { tr.appendChild(el("th", null, h)); }); node.appendChild(tr);
    rows.forEach(function (r) {
      var row = el("tr"); r.forEach(function (c) { row.appendChild(el("td", null, c == null ? "" : String(c))); }); node.appendChild(row);
    });
  }
  function loadOverview() {
    fetch("/api/supervisor/overview", { headers: { Authorization: "Bearer " + session.token } })
      .then(function (r) { return r.json(); })
      .then(function (o) {
        table($("sup-queues"), ["Queue", "Waiting", "With agent", "Oldest wait"],
              (o.queues || []).map(function (q) { return [queueName(q.name), q.waiting, q.with_agent, q.oldest_wait_s != null ? fmtSecs(q.oldest_wait_s) : "—"]; }));
        table($("sup-breaches"), ["Case", "Queue", "Kind", "Due", "Overdue"],
              (o.breaches || []).map(function (b) { return [b.number, queueName(b.queue), b.kind, b.due_at, fmtSecs(b.overdue_s)]; }));
        var s = o.satisfaction || {};
        $("sup-satisfaction").textContent = s.count ? ("average " + Number(s.average).toFixed(2) + " from " + s.count + " ratings") : "no ratings yet";
        table($("sup-audit"), ["When", "Who", "Action", "Target"],
              (o.audit || []).map(function (a) { return [a.created_at, a.actor, a.action, a.target]; }));
      });
  }

  if (session && session.token) start();
})();

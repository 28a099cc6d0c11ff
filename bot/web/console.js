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
    switch (f.type) {
      case "ready":
        $("conn").textContent = "connected";
        queues = f.queues || [];
        (f.waiting || []).forEach(function (w) { waiting[w.conversation_id] = w; });
        (f.conversations || []).forEach(function (c) {
          mine[c.conversation_id] = mine[c.conversation_id] || { transcript: c.transcript || [], case: c.case || null };
        });
        renderQueues(); renderLists();
        break;
      case "queue":
        queues = f.queues || queues;
        if (f.waiting) { waiting = {}; f.waiting.forEach(function (w) { waiting[w.conversation_id] = w; }); }
        renderQueues(); renderLists();
        break;
      case "handoff":
        waiting[f.conversation_id] = f; renderLists();
        break;
      case "assigned":
        delete waiting[f.conversation_id];
        mine[f.conversation_id] = { transcript: f.transcript || [], case: f.case || null };
        current = f.conversation_id;
        renderLists(); renderCurrent();
        break;
      case "message":
        var conv = mine[f.conversation_id];
        if (!conv) break;
        if (f.seq && conv.transcript.some(function (m) { return m.seq === f.seq; })) break;
        conv.transcript.push(f);
        if (f.conversation_id === current) renderCurrent(); else renderLists();
        break;
      case "case":
        if (mine[f.conversation_id]) { mine[f.conversation_id].case = f.case; if (f.conversation_id === current) renderCase(); }
        break;
      case "released":
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
        break;
    }
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
        var sla = el("span", due < 0 ? "breach" : null, due < 0 ? " · SLA breached " + fmtSecs(-due) : " · SLA " + fmtSecs(due));
        sla.setAttribute("data-due", String(Date.now() / 1000 + due));
        right.appendChild(sla);
      }
      li.appendChild(right);
      list.appendChild(li);
      var opt = el("option", null, queueName(q.name)); opt.value = q.name; sel.appendChild(opt);
    });
  }
  // SLA countdowns tick locally between queue snapshots.
  setInterval(function () {
    var nodes = document.querySelectorAll("#queue-list [data-due]");
    for (var i = 0; i < nodes.length; i++) {
      var due = parseFloat(nodes[i].getAttribute("data-due")) - Date.now() / 1000;
      nodes[i].textContent = due < 0 ? " · SLA breached " + fmtSecs(-due) : " · SLA " + fmtSecs(due);
      nodes[i].className = due < 0 ? "breach" : "";
    }
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
      li.appendChild(info);
      var b = el("button", null, "Claim");
      b.setAttribute("data-claim", id);
      b.addEventListener("click", function () { sendFrame({ type: "claim", conversation_id: id }); });
      li.appendChild(b);
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

  function renderCurrent() {
    var tr = $("transcript"); clear(tr);
    if (!current || !mine[current]) { $("chat-title").textContent = "Conversation"; renderCase(); return; }
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
    renderCase();
  }

  function renderCase() {
    var panel = $("case-panel"); clear(panel);
    var c = current && mine[current] && mine[current].case;
    if (!c) { panel.appendChild(el("p", "muted", "No case for this conversation.")); return; }
    var dl = el("dl");
    [["Number", c.number], ["Category", c.category], ["Queue", queueName(c.queue)], ["Stage", c.stage],
     ["First response due", when(c.first_response_due_at)], ["Next update due", when(c.next_update_due_at)],
     ["Reopened", c.reopen_count]].forEach(function (row) {
      if (row[1] == null) return;
      dl.appendChild(el("dt", null, row[0])); dl.appendChild(el("dd", null, String(row[1])));
    });
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
    sendFrame({ type: "message", conversation_id: current, text: text, client_msg_id: "a" + Date.now() + "-" + (counter++) });
    $("reply-text").value = "";
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
  $("resolve-btn").addEventListener("click", function () {
    if (current) sendFrame({ type: "resolve", conversation_id: current });
  });
  $("available").addEventListener("change", function () {
    sendFrame({ type: "availability", available: $("available").checked });
  });
  $("stage-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var c = current && mine[current] && mine[current].case;
    if (c) sendFrame({ type: "case_stage", conversation_id: current, case_number: c.number, stage: $("stage-select").value });
  });
  $("note-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var c = current && mine[current] && mine[current].case;
    var text = $("note-text").value.trim();
    if (c && text) { sendFrame({ type: "note", conversation_id: current, case_number: c.number, text: text }); $("note-text").value = ""; }
  });

  // ---- supervisor --------------------------------------------------------------------------
  $("supervisor-toggle").addEventListener("click", function () {
    var view = $("supervisor-view");
    view.hidden = !view.hidden;
    if (!view.hidden) loadOverview();
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
        table($("sup-breaches"), ["Case", "Queue", "Kind", "Since"],
              (o.breaches || []).map(function (b) { return [b.number, queueName(b.queue), b.kind, b.created_at]; }));
        var s = o.satisfaction || {};
        $("sup-satisfaction").textContent = s.count ? ("average " + Number(s.average).toFixed(2) + " from " + s.count + " ratings") : "no ratings yet";
        table($("sup-audit"), ["When", "Who", "Action", "Target"],
              (o.audit || []).map(function (a) { return [a.created_at, a.actor, a.action, a.target]; }));
      });
  }

  if (session && session.token) start();
})();

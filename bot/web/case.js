/* The customer's case page (/case/<number>#t=<token>): shows the case and sends the customer's
 * actions to /api/case/<number>/…, authorised by the signed link token in the X-Case-Link header.
 * No inline script, no external resource (CSP: script-src 'self'). */
(function () {
  "use strict";

  var T = {
    "en": {
      title: "Case {number}", team: "Handled by {team}", loading: "Loading your case…",
      nf_title: "This link does not open a case", nf_text: "The link may be incomplete or too old. Please use the newest link we sent you, or ask us in the chat.",
      facts: "Your case at a glance", stage: "Stage", specialist: "Your specialist", not_assigned: "Not yet assigned — {team} will take your case",
      next: "Next update due", next_none: "No further update needed", first: "First reply due",
      stages: "Progress", ext: "More time needed", ext_item: "{reason} — next update by {due}",
      resolved_title: "Is the problem solved?", resolved_text: "We marked your case as solved on {at}. Please confirm, or reopen it if the problem is not solved.",
      confirm: "Yes, it is solved", reopen_label: "Not solved? Tell us what is still wrong (optional)", reopen: "Reopen the case",
      reopen_until: "You can reopen until {until}.", reopen_closed: "This case was solved on {at}; it can only be reopened until {until}. Please contact us in the chat and we will open a new case.",
      confirmed_text: "You confirmed that the problem is solved.",
      rate_title: "How did we handle it?", score: "Your rating (1 = poor, 5 = excellent)", comment: "Comment (optional)", rate: "Send rating",
      rated: "You rated this case {score} out of 5. Thank you!",
      info_title: "Add information", info_label: "Anything our specialist should know (order number, what happened, what you tried)", info: "Send",
      events: "History", you: "You", team_label: "Our team",
      sent: "Thank you — we added it to your case.", done_confirm: "Thank you for confirming.", done_reopen: "Your case is open again.", done_rate: "Thank you for your rating.",
      choose_score: "Please choose a rating from 1 to 5.", empty_info: "Please write something first.",
      err: "That did not work: {message}",
      codes: { already_rated: "You have already rated this case. Thank you!",
              reopen_window_closed: "This case was solved too long ago to be reopened. Please contact us in the chat and we will open a new case.",
              wrong_stage: "This is not possible at the case's current stage. The page now shows the latest state.",
              rate_limited: "Too many attempts; please wait a minute and try again.",
              bad_request: "Please check what you entered and try again." }, offline: "We could not reach the server. Check your connection and try again.",
      ev: { created: "Case opened", stage_changed: "Stage: {to}", first_response: "A specialist picked up your case",
            progress_update: "Update: {detail}", sla_extended: "More time needed: {detail}", follow_up_scheduled: "Follow-up scheduled",
            follow_up: "We followed up", reopened: "Reopened", rated: "Rated {detail} out of 5", rating_comment: "Comment: {detail}",
            customer_info: "You added: {detail}", plan_change_withdrawn: "Plan change withdrawn", plan_change_replaced: "Plan change replaced" }
    },
    "zh-Hans": {
      title: "工单 {number}", team: "处理团队：{team}", loading: "正在加载工单…",
      nf_title: "此链接无法打开工单", nf_text: "链接可能不完整或已过期。请使用我们最近发送给您的链接，或在对话中联系我们。",
      facts: "工单概况", stage: "当前阶段", specialist: "负责专员", not_assigned: "尚未分配，{team}将处理您的工单",
      next: "下次更新时间", next_none: "无需再更新", first: "首次回复时间",
      stages: "处理进度", ext: "延期说明", ext_item: "{reason}（下次更新：{due}）",
      resolved_title: "问题解决了吗？", resolved_text: "我们已于 {at} 将工单标记为已解决。请确认，如问题仍未解决可重新打开。",
      confirm: "已解决，确认", reopen_label: "仍未解决？请告诉我们还有什么问题（可选）", reopen: "重新打开工单",
      reopen_until: "您可以在 {until} 之前重新打开。", reopen_closed: "此工单已于 {at} 解决，只能在 {until} 之前重新打开。请在对话中联系我们，我们会为您新建工单。",
      confirmed_text: "您已确认问题已解决。",
      rate_title: "请评价我们的处理", score: "评分（1 = 很差，5 = 很好）", comment: "评价内容（可选）", rate: "提交评价",
      rated: "您给本工单的评分是 {score} 分（满分 5 分），谢谢！",
      info_title: "补充信息", info_label: "需要告诉专员的情况（订单号、经过、已尝试的办法）", info: "发送",
      events: "处理记录", you: "您", team_label: "客服团队",
      sent: "谢谢，已添加到您的工单。", done_confirm: "感谢您的确认。", done_reopen: "工单已重新打开。", done_rate: "感谢您的评价。",
      choose_score: "请选择 1 到 5 分。", empty_info: "请先填写内容。",
      err: "操作未成功：{message}", offline: "无法连接服务器，请检查网络后重试。",
      codes: { already_rated: "您已经评价过本工单，谢谢！",
              reopen_window_closed: "此工单解决时间已久，无法重新打开。请在对话中联系我们，我们会为您新建工单。",
              wrong_stage: "工单当前阶段不能进行此操作，页面已更新为最新状态。",
              rate_limited: "操作过于频繁，请一分钟后再试。",
              bad_request: "请检查填写的内容后重试。" },
      ev: { created: "工单已受理", stage_changed: "阶段：{to}", first_response: "专员已开始处理",
            progress_update: "进展：{detail}", sla_extended: "延期：{detail}", follow_up_scheduled: "已安排回访",
            follow_up: "已回访", reopened: "已重新打开", rated: "评分：{detail} 分", rating_comment: "评价：{detail}",
            customer_info: "您补充了：{detail}", plan_change_withdrawn: "套餐变更已撤回", plan_change_replaced: "套餐变更已替换" }
    },
    "zh-Hant": {
      title: "案件 {number}", team: "處理團隊：{team}", loading: "正在載入案件…",
      nf_title: "此連結無法開啟案件", nf_text: "連結可能不完整或已過期。請使用我們最近傳給您的連結，或在對話中聯絡我們。",
      facts: "案件概況", stage: "目前階段", specialist: "負責專員", not_assigned: "尚未指派，{team}將處理您的案件",
      next: "下次更新時間", next_none: "無需再更新", first: "首次回覆時間",
      stages: "處理進度", ext: "延期說明", ext_item: "{reason}（下次更新：{due}）",
      resolved_title: "問題解決了嗎？", resolved_text: "我們已於 {at} 將案件標記為已解決。請確認，如問題仍未解決可重新開啟。",
      confirm: "已解決，確認", reopen_label: "仍未解決？請告訴我們還有什麼問題（選填）", reopen: "重新開啟案件",
      reopen_until: "您可以在 {until} 之前重新開啟。", reopen_closed: "此案件已於 {at} 解決，只能在 {until} 之前重新開啟。請在對話中聯絡我們，我們會為您新建案件。",
      confirmed_text: "您已確認問題已解決。",
      rate_title: "請評價我們的處理", score: "評分（1 = 很差，5 = 很好）", comment: "評價內容（選填）", rate: "送出評價",
      rated: "您給本案件的評分是 {score} 分（滿分 5 分），謝謝！",
      info_title: "補充資訊", info_label: "需要告訴專員的情況（訂單號碼、經過、已嘗試的辦法）", info: "送出",
      events: "處理紀錄", you: "您", team_label: "客服團隊",
      sent: "謝謝，已加入您的案件。", done_confirm: "感謝您的確認。", done_reopen: "案件已重新開啟。", done_rate: "感謝您的評價。",
      choose_score: "請選擇 1 到 5 分。", empty_info: "請先填寫內容。",
      err: "操作未成功：{message}", offline: "無法連線到伺服器，請檢查網路後再試。",
      codes: { already_rated: "您已經評價過本案件，謝謝！",
              reopen_window_closed: "此案件解決時間已久，無法重新開啟。請在對話中聯絡我們，我們會為您新建案件。",
              wrong_stage: "案件目前階段不能進行此操作，頁面已更新為最新狀態。",
              rate_limited: "操作過於頻繁，請一分鐘後再試。",
              bad_request: "請檢查填寫的內容後再試。" },
      ev: { created: "案件已受理", stage_changed: "階段：{to}", first_response: "專員已開始處理",
            progress_update: "進度：{detail}", sla_extended: "延期：{detail}", follow_up_scheduled: "已安排回訪",
            follow_up: "已回訪", reopened: "已重新開啟", rated: "評分：{detail} 分", rating_comment: "評價：{detail}",
            customer_info: "您補充了：{detail}", plan_change_withdrawn: "方案變更已撤回", plan_change_replaced: "方案變更已替換" }
    }
  };
  var LOCALE = { "en": "en-GB", "zh-Hans": "zh-CN", "zh-Hant": "zh-TW" };

  var parts = location.pathname.split("/");
  var number = decodeURIComponent(parts[parts.length - 1] || "");
  var token = (new URLSearchParams(location.hash.replace(/^#/, ""))).get("t") || "";
  var requested = (new URLSearchParams(location.search)).get("lang");
  var lang = T[requested] ? requested : guessLang();
  var view = null, score = 0;

  function guessLang() {
    var l = String(navigator.language || "en").toLowerCase();
    if (l.indexOf("zh") !== 0) return "en";
    return /hant|tw|hk|mo/.test(l) ? "zh-Hant" : "zh-Hans";
  }
  function $(id) { return document.getElementById(id); }
  function t(key, vars) {
    var s = (T[lang] && T[lang][key]) || T.en[key] || key;
    return fill(s, vars);
  }
  function fill(s, vars) {
    return String(s).replace(/\{(\w+)\}/g, function (m, k) { return vars && vars[k] != null ? vars[k] : ""; });
  }
  function when(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    if (isNaN(d.getTime())) return iso;
    return d.toLocaleString(LOCALE[lang] || "en-GB", { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }
  function text(id, value) { $(id).textContent = value; }
  function li(cls, main, sub) {
    var node = document.createElement("li");
    if (cls) node.className = cls;
    var a = document.createElement("span");
    a.className = "name";
    a.textContent = main;
    node.appendChild(a);
    if (sub) {
      var b = document.createElement("span");
      b.className = "when";
      b.textContent = sub;
      node.appendChild(b);
    }
    return node;
  }

  function labels() {
    document.documentElement.lang = lang;
    document.title = t("title", { number: number });
    text("title", t("title", { number: number }));
    text("loading", t("loading"));
    text("nf-title", t("nf_title"));
    text("nf-text", t("nf_text"));
    text("facts-title", t("facts"));
    text("l-stage", t("stage"));
    text("l-specialist", t("specialist"));
    text("stages-title", t("stages"));
    text("ext-title", t("ext"));
    text("resolved-title", t("resolved_title"));
    text("confirm-btn", t("confirm"));
    text("l-reopen", t("reopen_label"));
    text("reopen-btn", t("reopen"));
    text("rate-title", t("rate_title"));
    text("l-score", t("score"));
    text("l-comment", t("comment"));
    text("rate-btn", t("rate"));
    text("info-title", t("info_title"));
    text("l-info", t("info_label"));
    text("info-btn", t("info"));
    text("events-title", t("events"));
    var stars = $("stars");
    if (!stars.querySelector("input")) {
      for (var i = 1; i <= 5; i++) {
        var label = document.createElement("label");
        var input = document.createElement("input");
        input.type = "radio";
        input.name = "score";
        input.value = String(i);
        var span = document.createElement("span");
        span.textContent = String(i);
        label.appendChild(input);
        label.appendChild(span);
        stars.appendChild(label);
        input.addEventListener("change", onScore);
      }
    }
  }

  function onScore(e) {
    score = parseInt(e.target.value, 10);
    var ls = $("stars").getElementsByTagName("label");
    for (var i = 0; i < ls.length; i++) ls[i].className = i < score ? "on" : "";
  }

  function notFound() {
    $("loading").hidden = true;
    $("case").hidden = true;
    $("not-found").hidden = false;
  }

  function feedback(message, isError) {
    var f = $("feedback");
    f.textContent = message;
    f.className = "feedback" + (isError ? " error" : "");
    f.hidden = false;
  }

  function api(path, body) {
    // The page speaks the case's language (the script the customer wrote in) unless the link asks
    // for another one (?lang=); the browser's language only fills the moment before the answer.
    var url = "/api/case/" + encodeURIComponent(number) + path +
      (T[requested] ? "?lang=" + encodeURIComponent(requested) : "");
    var opts = { method: body ? "POST" : "GET", headers: { "X-Case-Link": token }, credentials: "omit", cache: "no-store" };
    if (body) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(url, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (data) { return { status: r.status, data: data }; });
    });
  }

  function render(v) {
    view = v;
    lang = T[v.lang] ? v.lang : lang;
    labels();
    $("loading").hidden = true;
    $("not-found").hidden = true;
    $("case").hidden = false;
    text("subtitle", t("team", { team: v.team }));
    text("stage-now", v.stage_name);
    var sp = $("specialist");
    sp.textContent = v.specialist || t("not_assigned", { team: v.team });
    sp.className = v.specialist ? "" : "muted";
    var next = $("next-update");
    if (v.first_response_due_at) {
      text("l-next", t("first"));
      next.textContent = when(v.first_response_due_at);
      next.className = "";
    } else if (v.next_update_due_at) {
      text("l-next", t("next"));
      next.textContent = when(v.next_update_due_at);
      next.className = "";
    } else {
      text("l-next", t("next"));
      next.textContent = t("next_none");
      next.className = "muted";
    }

    var stages = $("stages");
    stages.textContent = "";
    v.stages.forEach(function (s) {
      var node = li(s.state, s.name, s.at ? when(s.at) : "");
      node.setAttribute("data-stage", s.key);
      if (s.state === "current") node.setAttribute("aria-current", "step");
      stages.appendChild(node);
    });

    var ext = $("extensions");
    ext.textContent = "";
    (v.extensions || []).forEach(function (x) {
      ext.appendChild(li("", t("ext_item", { reason: x.reason, due: when(x.due_at) }), when(x.at)));
    });
    $("ext-box").hidden = !(v.extensions && v.extensions.length);

    var closed = v.stage === "resolved" || v.stage === "confirmed";
    $("resolved-box").hidden = !closed;
    if (closed) {
      text("resolved-text", v.stage === "resolved" ? t("resolved_text", { at: when(v.resolved_at) }) : t("confirmed_text"));
      $("confirm-btn").hidden = !v.can_confirm;
      $("reopen-form").hidden = !v.can_reopen;
      text("reopen-until", v.reopen_until ? t("reopen_until", { until: when(v.reopen_until) }) : "");
      var shut = $("reopen-closed");
      shut.hidden = v.can_reopen;
      shut.textContent = t("reopen_closed", { at: when(v.resolved_at), until: when(v.reopen_until) });
    }
    $("rate-box").hidden = !v.can_rate;
    var rated = $("rated");
    rated.hidden = v.rating == null;
    rated.textContent = v.rating == null ? "" : t("rated", { score: v.rating });

    var evs = $("events");
    evs.textContent = "";
    v.events.slice().reverse().forEach(function (e) {
      var tmpl = (T[lang].ev[e.kind]) || T.en.ev[e.kind] || e.kind;
      var line = fill(tmpl, { to: e.to_stage || "", detail: e.detail || "" });
      var node = li(e.by_customer ? "mine" : "", line, when(e.at) + " · " + (e.by_customer ? t("you") : t("team_label")));
      node.setAttribute("data-kind", e.kind);
      evs.appendChild(node);
    });
  }

  function refresh() {   // the case changed elsewhere (another tab, the agent): show what it is now
    api("", null).then(function (r) { if (r.status === 200) render(r.data); }, function () {});
  }

  function load() {
    if (!token) { notFound(); return; }
    api("", null).then(function (r) {
      if (r.status === 200) render(r.data); else notFound();
    }, function () { $("loading").textContent = t("offline"); });
  }

  function act(path, body, done, button) {
    if (button) button.disabled = true;
    return api(path, body).then(function (r) {
      if (button) button.disabled = false;
      if (r.status === 200) {
        render(r.data);
        feedback(t(done), false);
        return true;
      }
      if (r.status === 404) { notFound(); return false; }
      // In the page's language: the server's message is English (it is also an API answer).
      var code = r.data && r.data.error, own = code && ((T[lang].codes || {})[code] || T.en.codes[code]);
      feedback(t("err", { message: own || (r.data && r.data.message) || String(r.status) }), true);
      if (code === "wrong_stage" || code === "already_rated") refresh();
      return false;
    }, function () {
      if (button) button.disabled = false;
      feedback(t("offline"), true);
      return false;
    });
  }

  $("confirm-btn").addEventListener("click", function () {
    act("/confirm", {}, "done_confirm", $("confirm-btn"));
  });
  $("reopen-form").addEventListener("submit", function (e) {
    e.preventDefault();
    act("/reopen", { reason: $("reopen-reason").value }, "done_reopen", $("reopen-btn")).then(function (ok) {
      if (ok) $("reopen-reason").value = "";
    });
  });
  $("rate-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (!score) { feedback(t("choose_score"), true); return; }
    act("/rate", { score: score, comment: $("rate-comment").value }, "done_rate", $("rate-btn"));
  });
  $("info-form").addEventListener("submit", function (e) {
    e.preventDefault();
    var value = $("info-text").value.trim();
    if (!value) { feedback(t("empty_info"), true); return; }
    act("/info", { text: value }, "sent", $("info-btn")).then(function (ok) {
      if (ok) $("info-text").value = "";
    });
  });

  labels();
  load();
})();

/* The customer's case page (/case/<number>#t=<token>): shows the case and sends the customer's
 * actions to /api/case/<number>/…, authorised by the signed link token in the X-Case-Link header.
 * No inline script, no external resource (CSP: script-src 'self'). */
(function () {
  "use strict";

  // The texts, per language, from the hub's one text catalogue (bot/i18n.py, "case_page.*"),
  // served as /case-texts.js and loaded before this script.
  var T = window.HumanlineCaseTexts || { "en": { codes: {}, ev: {} } };
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

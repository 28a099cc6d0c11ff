/*
 * Humanline supervisor analytics: fetches /api/analytics with the console's login (the token the
 * console keeps in sessionStorage) and draws each figure as an inline SVG chart — no library, no
 * CDN, nothing inline that the page's Content-Security-Policy would refuse (colours are classes
 * in analytics.css). Every chart has a title, axis labels, a legend, an aria summary and the same
 * numbers as a table.
 */
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var SVG = "http://www.w3.org/2000/svg";
  var session = null;
  try { session = JSON.parse(sessionStorage.getItem("humanline:agent")); } catch (e) { session = null; }
  var data = null;

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function svg(tag, attrs, text) {
    var e = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (text != null) e.textContent = text;
    return e;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }
  function shortDay(iso) { return iso.slice(5); }                    // "2026-11-04" -> "11-04"
  function sum(values) { return values.reduce(function (a, v) { return a + (v || 0); }, 0); }
  function fmt(v, digits) {
    if (v == null) return "—";
    return digits != null ? Number(v).toFixed(digits) : String(v);
  }
  function niceStep(max, ticks) {
    var raw = max / ticks, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    var n = raw / mag;
    return (n <= 1 ? 1 : n <= 2 ? 2 : n <= 5 ? 5 : 10) * mag;
  }

  // ---- one chart ---------------------------------------------------------------------------
  // spec: {id, title, sub, y (axis label), kind: "stack" | "line", series: [{name, cls, values}],
  //        yMax (optional fixed top), yMin, digits, summary (text alternative), whole (integers only)}
  // Adds the chart's figure to box and returns the function that draws its SVG: call it once every
  // figure is in the page, so that each drawing takes its figure's final width.
  function chart(spec, days, box) {
    var fig = el("figure", "chart");
    box.appendChild(fig);
    fig.id = spec.id;
    var titleId = spec.id + "-title", descId = spec.id + "-desc";
    var cap = el("figcaption");
    var h = el("h2", null, spec.title); h.id = titleId; cap.appendChild(h);
    if (spec.sub) cap.appendChild(el("p", "sub", spec.sub));
    fig.appendChild(cap);
    var hasData = spec.series.some(function (s) { return s.values.some(function (v) { return v != null && v !== 0; }); });
    if (!hasData) {
      var none = el("p", "empty-chart", "No data in this period.");
      none.setAttribute("data-empty", "true");
      fig.appendChild(none);
      return function () {};
    }
    var slot = el("div", "plot");
    fig.appendChild(slot);
    var legend = el("ul", "legend");
    legend.setAttribute("aria-label", spec.title + " — legend");
    spec.series.forEach(function (s) {
      var li = el("li");
      var sw = el("span", "sw " + s.cls + (spec.kind === "line" ? " line" : ""));
      sw.setAttribute("aria-hidden", "true");
      li.appendChild(sw);
      li.appendChild(document.createTextNode(s.name));
      legend.appendChild(li);
    });
    fig.appendChild(legend);
    fig.appendChild(tableOf(spec, days));
    return function () { slot.appendChild(draw(spec, days, titleId, descId, slot.clientWidth)); };
  }

  function draw(spec, days, titleId, descId, room) {
    var width = Math.max(280, Math.min(1200, room || 600));
    var narrow = width < 420;
    var height = narrow ? 220 : 250;
    var m = { top: 12, right: 10, bottom: 44, left: 52 };
    var pw = width - m.left - m.right, ph = height - m.top - m.bottom;
    var n = days.length;
    var top = 0;
    if (spec.kind === "stack") {
      for (var i = 0; i < n; i++) top = Math.max(top, sum(spec.series.map(function (s) { return s.values[i]; })));
    } else {
      spec.series.forEach(function (s) { s.values.forEach(function (v) { if (v != null) top = Math.max(top, v); }); });
    }
    var yMin = spec.yMin || 0;
    var step = spec.yMax ? 1 : niceStep(Math.max(top, spec.whole ? 4 : 1e-9) - yMin || 1, 4);
    if (spec.whole) step = Math.max(1, Math.round(step));
    var yMax = spec.yMax || Math.max(step, Math.ceil(top / step) * step);
    var y = function (v) { return m.top + ph - (v - yMin) / (yMax - yMin) * ph; };
    var band = pw / n;
    var x = function (i) { return m.left + band * i + band / 2; };

    var root = svg("svg", { viewBox: "0 0 " + width + " " + height, width: width, height: height, role: "img",
                            "aria-labelledby": titleId + " " + descId });
    root.appendChild(svg("desc", { id: descId }, spec.summary));
    var grid = svg("g", { "class": "grid" }), axis = svg("g", { "class": "axis" });
    // As many decimals as the step needs (0.05 → 2): never two ticks with the same label.
    var tickDigits = step >= 1 ? 0 : Math.max(1, Math.ceil(-Math.log10(step) - 1e-9));
    for (var i2 = 0, t = yMin; t <= yMax + 1e-9; i2++, t = yMin + i2 * step) {
      grid.appendChild(svg("line", { x1: m.left, x2: m.left + pw, y1: y(t), y2: y(t) }));
      root.appendChild(svg("text", { "class": "tick", x: m.left - 6, y: y(t) + 4, "text-anchor": "end" },
                           fmt(t, tickDigits)));
    }
    root.insertBefore(grid, root.firstChild.nextSibling);
    axis.appendChild(svg("line", { x1: m.left, x2: m.left + pw, y1: m.top + ph, y2: m.top + ph }));
    axis.appendChild(svg("line", { x1: m.left, x2: m.left, y1: m.top, y2: m.top + ph }));
    root.appendChild(axis);
    // Day labels: as many as fit (about one per 46 px), always the last day.
    var every = Math.max(1, Math.ceil(n / Math.max(1, Math.floor(pw / 46))));
    for (var d = 0; d < n; d++) {
      if ((n - 1 - d) % every) continue;
      root.appendChild(svg("text", { "class": "tick", x: x(d), y: m.top + ph + 15, "text-anchor": "middle" },
                           shortDay(days[d])));
    }
    root.appendChild(svg("text", { "class": "axis-label", x: m.left + pw / 2, y: height - 6, "text-anchor": "middle" },
                         "Day (UTC)"));
    root.appendChild(svg("text", { "class": "axis-label", x: -(m.top + ph / 2), y: 13, "text-anchor": "middle",
                                   transform: "rotate(-90)" }, spec.y));

    if (spec.kind === "stack") {
      var bw = Math.max(2, band * 0.72);
      for (var k = 0; k < n; k++) {
        var base = 0;
        spec.series.forEach(function (s) {
          var v = s.values[k] || 0;
          if (!v) return;
          var r = svg("rect", { "class": s.cls, x: x(k) - bw / 2, y: y(base + v), width: bw,
                                height: Math.max(0.5, y(base) - y(base + v)) });
          r.appendChild(svg("title", {}, days[k] + " · " + s.name + ": " + fmt(v, spec.digits)));
          root.appendChild(r);
          base += v;
        });
      }
    } else {
      spec.series.forEach(function (s) {
        var path = "", pen = false;
        s.values.forEach(function (v, k) {
          if (v == null) { pen = false; return; }
          path += (pen ? " L " : " M ") + x(k).toFixed(1) + " " + y(v).toFixed(1);
          pen = true;
        });
        if (path) root.appendChild(svg("path", { "class": "series-line " + s.cls, d: path.trim() }));
        s.values.forEach(function (v, k) {
          if (v == null) return;
          var dot = svg("circle", { "class": "dot " + s.cls, cx: x(k), cy: y(v), r: 3.5 });
          dot.appendChild(svg("title", {}, days[k] + " · " + s.name + ": " + fmt(v, spec.digits)));
          root.appendChild(dot);
        });
      });
    }
    return root;
  }

  // The same numbers as a table: the text alternative a screen reader (or a careful reader) uses.
  function tableOf(spec, days) {
    var det = el("details");
    det.appendChild(el("summary", null, "Show the numbers"));
    var wrap = el("div", "table-wrap");
    var table = el("table");
    table.appendChild(el("caption", null, spec.title)).className = "visually-hidden";
    var head = el("tr");
    head.appendChild(el("th", null, "Day"));
    spec.series.forEach(function (s) { head.appendChild(el("th", null, s.name)); });
    table.appendChild(head);
    days.forEach(function (day, i) {
      var tr = el("tr");
      tr.appendChild(el("td", null, day));
      spec.series.forEach(function (s) { tr.appendChild(el("td", null, fmt(s.values[i], spec.digits))); });
      table.appendChild(tr);
    });
    wrap.appendChild(table);
    det.appendChild(wrap);
    return det;
  }

  // ---- the page ----------------------------------------------------------------------------
  function pct(a, b) { return b ? Math.round(a / b * 100) + " %" : "—"; }
  function mins(s) { return s == null ? null : Math.round(s / 6) / 10; }   // seconds -> minutes, 0.1

  function specs(r) {
    var rows = r.series, days = rows.map(function (d) { return d.day; });
    var col = function (key) { return rows.map(function (d) { return d[key]; }); };
    var out = [];
    var conv = sum(col("conversations")), contained = sum(col("contained"));
    out.push({ id: "chart-containment", title: "Bot containment", kind: "stack", y: "Conversations", whole: true,
               sub: "Conversations handled by the bot alone vs. handed to a person",
               series: [{ name: "Bot alone (contained)", cls: "c2", values: col("contained") },
                        { name: "Handed to a person", cls: "c1",
                          values: rows.map(function (d) { return d.conversations - d.contained; }) }],
               summary: contained + " of " + conv + " conversations (" + pct(contained, conv) +
                        ") were handled without a person over " + rows.length + " days." });
    function breakdown(id, title, key, names) {
      var total = sum(col("handoffs"));
      var used = names.filter(function (n) { return rows.some(function (d) { return d[key][n]; }); });
      var series = used.map(function (n, i) {
        return { name: (r.labels && r.labels[key === "handoffs_by_reason" ? "reasons" : "queues"] || {})[n] || n,
                 cls: "c" + (i % 10), values: rows.map(function (d) { return d[key][n] || 0; }) };
      });
      var parts = series.map(function (s) { return s.name + " " + sum(s.values); }).join(", ");
      out.push({ id: id, title: title, kind: "stack", y: "Handoffs", whole: true, series: series,
                 sub: total + " handoffs to a person in this period",
                 summary: total + " handoffs over " + rows.length + " days" + (parts ? ": " + parts + "." : ".") });
    }
    breakdown("chart-reasons", "Handoffs by reason", "handoffs_by_reason", r.reasons);
    breakdown("chart-queues", "Handoffs by queue", "handoffs_by_queue", r.queues);
    var p50 = col("time_to_person_p50_s").map(mins), p90 = col("time_to_person_p90_s").map(mins);
    out.push({ id: "chart-wait", title: "Time to a person", kind: "line", y: "Minutes", digits: 1,
               sub: "From the handoff to the first agent message (median and 90th percentile)",
               series: [{ name: "Median (p50)", cls: "c0", values: p50 }, { name: "p90", cls: "c5", values: p90 }],
               summary: "Worst daily median " + fmt(Math.max.apply(null, p50.filter(function (v) { return v != null; }).concat([0])), 1) +
                        " min, worst daily p90 " + fmt(Math.max.apply(null, p90.filter(function (v) { return v != null; }).concat([0])), 1) +
                        " min; " + sum(col("reached_person")) + " handoffs reached a person." });
    [["first_response", "First-response SLA", "chart-sla-first"], ["update", "Progress-update SLA", "chart-sla-update"]]
      .forEach(function (c) {
        var met = col(c[0] + "_met"), bad = col(c[0] + "_breached");
        out.push({ id: c[2], title: c[1], kind: "stack", y: "Clocks", whole: true,
                   sub: "Case SLA clocks met or breached, on the day they were settled",
                   series: [{ name: "Met", cls: "ok", values: met }, { name: "Breached", cls: "bad", values: bad }],
                   summary: sum(met) + " met and " + sum(bad) + " breached (" + pct(sum(met), sum(met) + sum(bad)) +
                            " met) over " + rows.length + " days." });
      });
    var ratings = sum(col("ratings"));
    out.push({ id: "chart-satisfaction", title: "Satisfaction", kind: "line", y: "Average rating (1–5)", digits: 2,
               yMin: 1, yMax: 5, sub: ratings + " ratings of resolved cases in this period",
               series: [{ name: "Average rating", cls: "c3", values: col("satisfaction_avg") }],
               summary: ratings ? ratings + " ratings; daily averages from " +
                 fmt(Math.min.apply(null, col("satisfaction_avg").filter(function (v) { return v != null; })), 2) + " to " +
                 fmt(Math.max.apply(null, col("satisfaction_avg").filter(function (v) { return v != null; })), 2) + "."
                 : "No ratings in this period." });
    out.push({ id: "chart-load", title: "Agent load", kind: "line", y: "Count", whole: true,
               sub: "Conversations assigned, agents holding one, and the most one agent held at once",
               series: [{ name: "Conversations assigned", cls: "c0", values: col("assignments") },
                        { name: "Agents active", cls: "c2", values: col("active_agents") },
                        { name: "Most held at once", cls: "c5", values: col("peak_load") }],
               summary: sum(col("assignments")) + " conversations assigned; at most " +
                        Math.max.apply(null, col("peak_load").concat([0])) + " held at once by one agent." });
    return { days: days, specs: out };
  }

  // Per agent over the period: conversations assigned, the most held at once, and the limit.
  function agentTable(agents) {
    var fig = el("figure", "chart");
    fig.id = "agents-period";
    var cap = el("figcaption"); cap.appendChild(el("h2", null, "Agents in this period")); fig.appendChild(cap);
    if (!agents.length) { fig.appendChild(el("p", "empty-chart", "No conversation was assigned in this period.")); return fig; }
    var wrap = el("div", "table-wrap"), table = el("table", "agents");
    var head = el("tr");
    ["Agent", "Assigned", "Most held at once", "Limit"].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    agents.forEach(function (a) {
      var tr = el("tr");
      [a.display_name, a.assignments, a.peak_load, a.limit].forEach(function (v) { tr.appendChild(el("td", null, String(v))); });
      if (a.peak_load > a.limit) tr.className = "over";
      table.appendChild(tr);
    });
    wrap.appendChild(table); fig.appendChild(wrap);
    return fig;
  }

  function render() {
    var box = $("charts"); clear(box);
    if (!data) return;
    $("range").textContent = "From " + data.from + " to " + data.to + " (UTC days) · updated " +
      new Date(data.generated_at).toLocaleString();
    $("empty").hidden = !data.empty;
    if (data.empty) return;
    var built = specs(data);
    built.specs.map(function (s) { return chart(s, built.days, box); })
      .forEach(function (drawIt) { drawIt(); });
    box.appendChild(agentTable(data.agents || []));
  }

  function days() { return $("days").value; }

  function load() {
    $("csv-link").href = "/api/analytics.csv?days=" + days();
    if (!session || !session.token) { refuse("Log in to the console first."); return; }
    $("range").textContent = "Loading…";
    fetch("/api/analytics?days=" + days(), { headers: { Authorization: "Bearer " + session.token } })
      .then(function (r) {
        return r.text().then(function (t) {
          var body = {}; try { body = JSON.parse(t); } catch (e) { body = {}; }
          return { status: r.status, body: body };
        });
      })
      .then(function (res) {
        if (res.status === 401) { refuse("Your session has expired: log in to the console again."); return; }
        if (res.status === 403) { refuse("The analytics are for supervisors; your account is an agent's."); return; }
        if (res.status !== 200) { $("range").textContent = res.body.message || "The figures could not be loaded."; return; }
        data = res.body;
        render();
      })
      .catch(function () { $("range").textContent = "The server cannot be reached."; });
  }

  function refuse(why) {
    $("need-login").hidden = false;
    $("range").textContent = why;
    $("csv-link").hidden = true;
    clear($("charts"));
  }

  // The CSV needs the login too: fetch it with the token and hand the browser the file.
  $("csv-link").addEventListener("click", function (e) {
    e.preventDefault();
    if (!session || !session.token) return;
    var link = this;
    fetch(link.href, { headers: { Authorization: "Bearer " + session.token } })
      .then(function (r) {
        if (!r.ok) throw new Error(String(r.status));
        var name = /filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "");
        return r.blob().then(function (b) { return { blob: b, name: name ? name[1] : "humanline-analytics.csv" }; });
      })
      .then(function (f) {
        var a = document.createElement("a");
        a.href = URL.createObjectURL(f.blob);
        a.download = f.name;
        document.body.appendChild(a);
        a.click();
        setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      })
      .catch(function () { $("range").textContent = "The CSV could not be downloaded."; });
  });
  $("days").addEventListener("change", load);
  // Redrawn for a new width only: a phone fires "resize" when its address bar hides on scrolling,
  // and a redraw then would close the tables the supervisor opened and move the page.
  var resized = null, drawnWidth = window.innerWidth;
  window.addEventListener("resize", function () {
    clearTimeout(resized);
    resized = setTimeout(function () {
      if (window.innerWidth === drawnWidth) return;
      drawnWidth = window.innerWidth;
      render();
    }, 150);
  });
  load();
})();

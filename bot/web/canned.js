/*
 * Canned replies and the reply-script warning in the agent console (docs/hub.md, "Canned replies").
 * Loaded after console.js and hooked in through window.HumanlineConsole.
 *
 * - Typing "/" (then part of a shortcut) at the start of the reply box, or Ctrl+/ anywhere in it,
 *   opens a picker of the canned replies in the customer's language, rendered by the hub for the open
 *   conversation; ↑/↓ choose, Enter or a click inserts, Escape closes. A placeholder the hub could not
 *   fill stays as "[[fill in: …]]" and is selected, so the agent types over it; a reply still holding
 *   one is not sent.
 * - While the agent types, the hub checks the reply's script against the customer's (script_check);
 *   a reply in another script shows a warning next to the composer and is sent only after "Send
 *   anyway". A reply sent before the check came back goes with check_script, so the hub refuses it
 *   in that case; the text comes back into the reply box with the warning.
 * - Supervisors get a "Canned replies" block in the supervisor view: list, create, edit, delete.
 * Everything from the hub is put on the page with textContent.
 */
(function () {
  "use strict";
  var api = window.HumanlineConsole;
  if (!api) return;
  var $ = function (id) { return document.getElementById(id); };
  var LANG_NAMES = { en: "English", "zh-Hans": "Simplified Chinese", "zh-Hant": "Traditional Chinese" };
  var MARKER = /\[\[fill in: [a-z_]+\]\]/;
  var box = $("reply-text"), form = $("reply-form");

  var el = api.el, clear = api.clear;   // console.js's DOM helpers (textContent only)

  // ---- the composer's companions: picker and warning ------------------------------------------
  var picker = el("div", "canned-picker");
  picker.id = "canned-picker";
  picker.hidden = true;
  var pickerHead = el("div", "canned-head");
  var pickerList = el("ul", "canned-list");
  pickerList.id = "canned-list";
  pickerList.setAttribute("role", "listbox");
  pickerList.setAttribute("aria-label", "Canned replies");
  picker.appendChild(pickerHead); picker.appendChild(pickerList);

  var warning = el("div", "script-warning");
  warning.id = "script-warning";
  warning.setAttribute("role", "alert");
  warning.hidden = true;
  var warningText = el("span", "script-warning-text");
  var sendAnyway = el("button", "secondary", "Send anyway");
  sendAnyway.type = "button"; sendAnyway.id = "send-anyway";
  warning.appendChild(warningText); warning.appendChild(sendAnyway);
  form.parentNode.insertBefore(picker, form);
  form.parentNode.insertBefore(warning, form);

  var listing = null;        // {conversation_id, customer_lang, replies} from the hub
  var choices = [], active = 0;
  var confirmed = null;      // {cid, text} the agent chose to send despite the warning
  var lastCheck = null;      // {cid, text, mismatch, missing}: the hub's answer for that exact text
  var flagged = {};          // client_msg_id -> text sent with check_script (restored if refused)

  function query() {
    var m = /^\/([a-z0-9_-]*)$/i.exec(box.value);
    return m ? m[1].toLowerCase() : null;
  }
  function openPicker() {
    var cid = api.current();
    if (!cid) return;
    picker.hidden = false;
    if (!listing || listing.conversation_id !== cid) {
      clear(pickerList); pickerHead.textContent = "Loading canned replies…";
      listing = null;
    }
    // Rendered afresh each time: the case, the queue or the customer's script may have changed.
    api.send({ type: "canned_list", conversation_id: cid });
    renderPicker();
  }
  var pickerShown = "";       // what pickerList shows now (renderPicker skips an identical redraw)
  function closePicker() { picker.hidden = true; pickerShown = ""; }
  function renderPicker() {
    if (picker.hidden || !listing) return;
    var q = query() || "", lang = listing.customer_lang;
    choices = listing.replies.filter(function (r) {
      return (!lang || r.lang === lang) && (!q || r.shortcut.indexOf(q) === 0 || r.title.toLowerCase().indexOf(q) >= 0);
    });
    if (active >= choices.length) active = 0;
    pickerHead.textContent = "Canned replies" + (lang ? " in " + (LANG_NAMES[lang] || lang) : "") +
      (choices.length ? " — ↑↓ to choose, Enter to insert" : " — none match /" + q);
    // The hub's answer to each keystroke's listing usually changes nothing: keep the same
    // elements then (no flicker, and an item under the mouse stays the one clicked).
    var shown = JSON.stringify([active, choices.map(function (r) { return [r.shortcut, r.lang, r.title, r.text]; })]);
    if (shown === pickerShown && pickerList.childNodes.length === choices.length) return;
    pickerShown = shown;
    clear(pickerList);
    choices.forEach(function (r, i) {
      var li = el("li", "canned-item" + (i === active ? " active" : ""));
      li.setAttribute("role", "option");
      li.setAttribute("aria-selected", i === active ? "true" : "false");
      li.setAttribute("data-shortcut", r.shortcut);
      li.appendChild(el("strong", null, "/" + r.shortcut));
      li.appendChild(el("span", "canned-title", " " + r.title));
      li.appendChild(el("span", "canned-text", r.text));
      li.addEventListener("mousedown", function (e) { e.preventDefault(); insert(r); });
      pickerList.appendChild(li);
    });
  }
  function insert(r) {
    box.value = r.text;
    closePicker();
    box.focus();
    var m = MARKER.exec(r.text);
    if (m) box.setSelectionRange(m.index, m.index + m[0].length);
    else box.setSelectionRange(r.text.length, r.text.length);
    check();
  }

  // ---- the script warning ----------------------------------------------------------------------
  var timer = null;
  function check() {
    clearTimeout(timer);
    var cid = api.current(), text = box.value.trim();
    if (!cid || !text || query() !== null) { showWarning(null); return; }
    timer = setTimeout(function () { api.send({ type: "script_check", conversation_id: cid, text: text }); }, 250);
  }
  function showWarning(result) {
    var text = box.value.trim(), cid = api.current();
    var current = result && result.cid === cid && result.text === text;
    if (current && result.missing && result.missing.length) {
      warningText.textContent = "Fill in " + result.missing.join(", ") + " before sending.";
      sendAnyway.hidden = true; warning.hidden = false; return;
    }
    if (current && result.mismatch) {
      warningText.textContent = "⚠ This reply is in " + (LANG_NAMES[result.mismatch.reply_script] || result.mismatch.reply_script) +
        "; the customer writes " + (LANG_NAMES[result.mismatch.customer_script] || result.mismatch.customer_script) + ".";
      sendAnyway.hidden = false; warning.hidden = false; return;
    }
    warning.hidden = true;
  }
  sendAnyway.addEventListener("click", function () {
    confirmed = { cid: api.current(), text: box.value.trim() };
    warning.hidden = true;
    form.requestSubmit();
  });

  api.beforeSend.push(function (frame) {
    closePicker();
    var missing = frame.text.match(/\[\[fill in: ([a-z_]+)\]\]/g);
    if (missing) {
      lastCheck = { cid: frame.conversation_id, text: frame.text, mismatch: null,
                    missing: missing.map(function (m) { return m.slice(11, -2); }) };
      showWarning(lastCheck);
      var at = MARKER.exec(box.value);
      if (at) box.setSelectionRange(at.index, at.index + at[0].length);
      box.focus();
      return false;
    }
    if (confirmed && confirmed.cid === frame.conversation_id && confirmed.text === frame.text) {
      confirmed = null;
      return true;                       // the agent saw the warning and sends anyway
    }
    if (lastCheck && lastCheck.cid === frame.conversation_id && lastCheck.text === frame.text && lastCheck.mismatch) {
      showWarning(lastCheck);            // known mismatch: hold the reply until confirmed
      return false;
    }
    frame.check_script = true;           // not checked yet: the hub refuses it on a mismatch
    flagged[frame.client_msg_id] = { cid: frame.conversation_id, text: frame.text };
    return true;
  });

  api.onFrame.push(function (f) {
    if (f.type === "canned_list" && f.conversation_id && f.conversation_id === api.current()) {
      listing = f; renderPicker();
    } else if (f.type === "script_check" && f.conversation_id === api.current()) {
      // The answer names the text it checked: it applies only while the box holds that text.
      lastCheck = { cid: f.conversation_id, text: f.text, mismatch: f.mismatch, missing: f.missing || [] };
      showWarning(lastCheck);
    } else if (f.type === "error" && (f.code === "script_mismatch" || f.code === "unfilled_placeholder")) {
      var sent = null;
      Object.keys(flagged).forEach(function (k) { if (flagged[k].cid === f.conversation_id) sent = flagged[k]; });
      flagged = {};
      if (sent && sent.cid === api.current()) {
        if (!box.value.trim()) box.value = sent.text;   // the refused reply comes back to the box
        lastCheck = { cid: sent.cid, text: sent.text, mismatch: null, missing: [] };
        if (f.code === "script_mismatch") {
          api.send({ type: "script_check", conversation_id: sent.cid, text: sent.text });
        } else {
          lastCheck.missing = (sent.text.match(/\[\[fill in: ([a-z_]+)\]\]/g) || []).map(function (m) { return m.slice(11, -2); });
          showWarning(lastCheck);
        }
      }
    } else if (f.type === "message" && f.sender === "agent" && f.client_msg_id) {
      delete flagged[f.client_msg_id];
    }
  });
  api.onConversation.push(function (cid) {
    if (listing && listing.conversation_id !== cid) { listing = null; closePicker(); }
    showWarning(lastCheck);
  });

  // ---- the reply box's keys --------------------------------------------------------------------
  box.addEventListener("input", function () {
    if (query() !== null) { openOrFilter(); } else { closePicker(); }
    check();
  });
  function openOrFilter() { if (picker.hidden) openPicker(); else renderPicker(); }
  // Capture on the form: runs before console.js's Enter-to-send on the box itself.
  form.addEventListener("keydown", function (e) {
    if (e.target !== box) return;
    if ((e.ctrlKey || e.metaKey) && e.key === "/") {
      e.preventDefault(); e.stopPropagation();
      if (picker.hidden) openPicker(); else closePicker();
      return;
    }
    if (picker.hidden) return;
    if (e.key === "Escape") { e.preventDefault(); e.stopPropagation(); closePicker(); return; }
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault(); e.stopPropagation();
      if (choices.length) active = (active + (e.key === "ArrowDown" ? 1 : choices.length - 1)) % choices.length;
      renderPicker();
      return;
    }
    if ((e.key === "Enter" || e.key === "Tab") && !e.shiftKey && !e.isComposing) {
      e.preventDefault(); e.stopPropagation();
      if (choices[active]) insert(choices[active]);
    }
  }, true);

  // ---- supervisors: manage the canned replies ----------------------------------------------------
  var toggle = $("supervisor-toggle"), grid = document.querySelector("#supervisor-view .sup-grid");
  if (!toggle || !grid) return;
  var block = el("div", "canned-admin");
  block.id = "canned-admin";
  block.appendChild(el("h3", null, "Canned replies"));
  var table = el("table"); table.id = "canned-table";
  var adminForm = el("form", "stack"); adminForm.id = "canned-form";
  var editing = null;
  function field(label, node) { var l = el("label", "canned-field"); l.appendChild(el("span", null, label)); l.appendChild(node); return l; }
  var fShortcut = el("input"); fShortcut.id = "canned-shortcut"; fShortcut.required = true; fShortcut.placeholder = "refund-eta";
  var fLang = el("select"); fLang.id = "canned-lang";
  Object.keys(LANG_NAMES).forEach(function (k) { var o = el("option", null, LANG_NAMES[k]); o.value = k; fLang.appendChild(o); });
  var fTitle = el("input"); fTitle.id = "canned-title-input"; fTitle.placeholder = "Title (optional)";
  var fBody = el("textarea"); fBody.id = "canned-body"; fBody.rows = 3; fBody.required = true;
  fBody.placeholder = "Text; placeholders: {customer_name} {case_number} {queue} {eta} {agent_name}";
  var fSave = el("button", null, "Save canned reply"); fSave.type = "submit";
  var fNew = el("button", "secondary", "New"); fNew.type = "button";
  var fMsg = el("p", "case-msg"); fMsg.id = "canned-msg"; fMsg.setAttribute("role", "status");
  var buttons = el("div", "inline"); buttons.appendChild(fSave); buttons.appendChild(fNew);
  [field("Shortcut", fShortcut), field("Language", fLang), field("Title", fTitle), field("Text", fBody), buttons, fMsg]
    .forEach(function (n) { adminForm.appendChild(n); });
  block.appendChild(table); block.appendChild(adminForm);

  function msg(text, isError) { fMsg.textContent = text; fMsg.className = "case-msg" + (isError ? " error" : ""); }
  function reset() { editing = null; adminForm.reset(); fSave.textContent = "Save canned reply"; }
  function renderAdmin(replies) {
    clear(table);
    var head = el("tr");
    ["Shortcut", "Language", "Title", "Text", ""].forEach(function (h) { head.appendChild(el("th", null, h)); });
    table.appendChild(head);
    replies.forEach(function (r) {
      var tr = el("tr");
      tr.setAttribute("data-canned", String(r.id));
      [("/" + r.shortcut), LANG_NAMES[r.lang] || r.lang, r.title, r.body].forEach(function (c) { tr.appendChild(el("td", null, c)); });
      var td = el("td", "canned-actions");
      var edit = el("button", "secondary", "Edit"); edit.type = "button";
      edit.setAttribute("aria-label", "Edit /" + r.shortcut + " (" + r.lang + ")");
      edit.addEventListener("click", function () {
        editing = r.id; fShortcut.value = r.shortcut; fLang.value = r.lang; fTitle.value = r.title; fBody.value = r.body;
        fSave.textContent = "Save changes"; fBody.focus();
      });
      var del = el("button", "secondary", "Delete"); del.type = "button";
      del.setAttribute("aria-label", "Delete /" + r.shortcut + " (" + r.lang + ")");
      del.addEventListener("click", function () {
        if (window.confirm("Delete the canned reply /" + r.shortcut + " (" + (LANG_NAMES[r.lang] || r.lang) + ")?")) {
          api.send({ type: "canned_delete", id: r.id });
        }
      });
      td.appendChild(edit); td.appendChild(del); tr.appendChild(td);
      table.appendChild(tr);
    });
  }
  function loadAdmin() { api.send({ type: "canned_list" }); }
  adminForm.addEventListener("submit", function (e) {
    e.preventDefault();
    var frame = { type: "canned_save", shortcut: fShortcut.value.trim(), lang: fLang.value, title: fTitle.value, body: fBody.value };
    if (editing != null) frame.id = editing;
    msg("Saving…", false);
    api.send(frame);
  });
  fNew.addEventListener("click", function () { reset(); msg("", false); fShortcut.focus(); });
  toggle.addEventListener("click", function () {
    var me = api.agent();
    if (!me || me.role !== "supervisor") return;
    if (!block.parentNode) grid.appendChild(block);
    loadAdmin();
  });
  api.onFrame.push(function (f) {
    if (!block.parentNode) return;
    if (f.type === "canned_list" && !f.conversation_id) renderAdmin(f.replies || []);
    else if (f.type === "canned_saved") { msg("Saved /" + f.reply.shortcut + " (" + (LANG_NAMES[f.reply.lang] || f.reply.lang) + ").", false); reset(); loadAdmin(); }
    else if (f.type === "canned_deleted") { msg("Deleted /" + f.reply.shortcut + ".", false); loadAdmin(); }
    else if (f.type === "error" && !f.conversation_id && fMsg.textContent === "Saving…") msg(f.message || f.code, true);
  });
})();

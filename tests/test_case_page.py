"""The customer's case page (``/case/<number>``) through the real hub: signed links, what the page
shows, the customer's actions, and the links carried by notifications and status frames."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select, update

from bot.brain import BrainTurn
from bot.client import ChatClient
from bot.hub.case_page import WEB_DIR
from bot.services import audit
from bot.services.case_links import CaseLinks, link_line
from bot.services.notifications import pending
from bot.store.models import Case, Conversation, Handoff, Visitor, utcnow
from tests.hubtools import AgentClient, RunningHub, ScriptedBrain, running_hub, turn

NOW = 1_800_000_000.0


# ----------------------------------------------------------------------------- the link itself


def test_a_link_verifies_for_its_case_only_until_it_expires() -> None:
    clock = [NOW]
    links = CaseLinks("k" * 64, "https://help.example.com/", ttl_s=3600, clock=lambda: clock[0])
    token = links.token("HL-20261203-0001")
    assert links.verify("HL-20261203-0001", token)
    assert not links.verify("HL-20261203-0002", token)           # another case
    assert not links.verify("hl-20261203-0001", token)           # only the canonical number
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert not links.verify("HL-20261203-0001", forged)
    longer = token.replace(f".{int(NOW) + 3600}.", f".{int(NOW) + 7200}.")  # a stretched expiry
    assert longer != token and not links.verify("HL-20261203-0001", longer)
    for junk in (None, "", "v1..", "v2.1.abc", 42, "x" * 500):
        assert not links.verify("HL-20261203-0001", junk)
    clock[0] = NOW + 3600
    assert links.verify("HL-20261203-0001", token)
    clock[0] = NOW + 3601
    assert not links.verify("HL-20261203-0001", token)
    url = links.url("hl 20261203 0001")
    assert url.startswith("https://help.example.com/case/HL-20261203-0001#t=v1.")


def test_rotation_keeps_links_only_while_the_old_key_is_listed() -> None:
    old = CaseLinks("old-secret", clock=lambda: NOW)
    token = old.token("HL-20261203-0001")
    assert CaseLinks(("new-secret", "old-secret"), clock=lambda: NOW).verify("HL-20261203-0001", token)
    assert not CaseLinks("new-secret", clock=lambda: NOW).verify("HL-20261203-0001", token)


def test_a_case_link_is_not_a_visitor_token_and_the_other_way_round() -> None:
    from bot.hub.auth import sign_visitor, verify_visitor

    links = CaseLinks("shared-secret", clock=lambda: NOW)
    visitor = sign_visitor("shared-secret", "HL-20261203-0001", 3600, now=NOW)
    assert not links.verify("HL-20261203-0001", visitor)
    assert verify_visitor("shared-secret", links.token("HL-20261203-0001"), now=NOW) is None


def test_the_bot_line_is_in_the_customers_script() -> None:
    assert link_line("U", "zh-Hans") == "在线查看工单处理进度：U"
    assert link_line("U", "zh-Hant") == "線上查看案件處理進度：U"
    assert link_line("U", "fr") == "Follow your case online: U"


# ----------------------------------------------------------------------------- through the hub


def _request(srv: RunningHub, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["X-Case-Link"] = token
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(srv.url + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _token(url: str) -> str:
    fragment = urlsplit(url).fragment
    assert fragment.startswith("t=")
    return fragment[2:]


def _open(srv: RunningHub, lang: str = "en", visitor: str = "visitor-1") -> Any:
    return srv.hub.cases.open_case("service", visitor_id=visitor, description="the app crashes", lang=lang)


def _view(srv: RunningHub, number: str, token: str, lang: str | None = None) -> dict[str, Any]:
    status, body = _request(srv, "GET", f"/api/case/{number}" + (f"?lang={lang}" if lang else ""), token)
    assert status == 200, body
    return dict(json.loads(body))


def _post(srv: RunningHub, number: str, action: str, token: str, body: Any) -> tuple[int, dict[str, Any]]:
    status, raw = _request(srv, "POST", f"/api/case/{number}/{action}", token, body)
    return status, json.loads(raw)


@pytest.fixture
def srv(tmp_path: Path) -> Any:
    with running_hub(tmp_path, ScriptedBrain(lambda text, n: turn("ok"))) as hub:
        yield hub


def test_every_customer_notification_carries_a_link_that_opens_the_case(srv: RunningHub) -> None:
    case = _open(srv, lang="zh-Hans")
    srv.hub.cases.advance(case.number, "verifying", "agent:alice")
    srv.hub.cases.extend_sla(case.number, "等待物流公司回复", "agent:alice", hours=12)
    rows = [n for n in pending(srv.db) if n.case_id == case.id]
    customer = [n for n in rows if n.channel != "webhook"]
    assert [n.payload["event"] for n in customer] == ["created", "stage_changed", "sla_extended"]
    for n in customer:
        url = n.payload["case_url"]
        assert url.startswith(f"{srv.settings.public_url}/case/{case.number}#t=")
        assert srv.hub.links.verify(case.number, _token(url))
        view = _view(srv, case.number, _token(url))
        assert view["number"] == case.number
    # The page, in the customer's script: the five stages, who, when, the extension and its reason.
    view = _view(srv, case.number, _token(customer[-1].payload["case_url"]))
    assert view["lang"] == "zh-Hans"
    assert [s["name"] for s in view["stages"]] == ["受理", "核实", "方案制定", "问题解决", "用户确认"]
    assert [s["state"] for s in view["stages"]] == ["done", "current", "todo", "todo", "todo"]
    assert view["specialist"] is None and view["team"]
    assert view["next_update_due_at"] is not None
    assert [x["reason"] for x in view["extensions"]] == ["等待物流公司回复"]
    assert [x["hours"] for x in view["extensions"]] == [12.0]
    assert _view(srv, case.number, _token(customer[-1].payload["case_url"]), "zh-Hant")["stages"][1]["name"] == "核實"
    # Internal notifications stay without a link.
    assert all("case_url" not in n.payload for n in rows if n.channel == "webhook")


def test_no_case_data_without_a_valid_link_and_no_way_to_tell_which_cases_exist(srv: RunningHub) -> None:
    case = _open(srv)
    links: CaseLinks = srv.hub.links
    good = links.token(case.number)
    expired = links.token(case.number, ttl_s=-1)
    forged = CaseLinks("not-the-hub-secret").token(case.number)
    other = links.token("HL-20200101-0001")          # correctly signed, but no such case
    answers = {
        "missing": _request(srv, "GET", f"/api/case/{case.number}", None),
        "forged": _request(srv, "GET", f"/api/case/{case.number}", forged),
        "expired": _request(srv, "GET", f"/api/case/{case.number}", expired),
        "garbage": _request(srv, "GET", f"/api/case/{case.number}", "v1.9999999999.abc"),
        "wrong case": _request(srv, "GET", "/api/case/HL-20200101-0001", good),
        "unknown case": _request(srv, "GET", "/api/case/HL-20200101-0001", other),
        "not a number": _request(srv, "GET", "/api/case/whatever", good),
        "post forged": _request(srv, "POST", f"/api/case/{case.number}/info", forged, {"text": "hi"}),
        "post unknown": _request(srv, "POST", "/api/case/HL-20200101-0001/confirm", other, {}),
    }
    assert {name: status for name, (status, _) in answers.items()} == {name: 404 for name in answers}
    bodies = {body for _, body in answers.values()}
    assert len(bodies) == 1 and case.number.encode() not in bodies.pop()
    # Nothing was written through a refused link.
    assert [e.kind for e in srv.hub.cases.timeline(case.number)] == ["created"]
    # The page itself is the same document for any number, and never holds case data.
    page_a = srv.get(f"/case/{case.number}")
    page_b = srv.get("/case/HL-20200101-0001")
    assert page_a == page_b and page_a[0] == 200 and case.number.encode() not in page_a[1]
    assert _view(srv, case.number, good)["number"] == case.number


def test_a_token_with_characters_outside_ascii_is_refused_like_any_other_link(srv: RunningHub) -> None:
    """A header value the hub decodes to non-ASCII text (here: UTF-8 bytes of "é" and Arabic-Indic
    digits) is a refused link (the same 404, counted as a miss), not a 500 from ``compare_digest``."""
    case = _open(srv)
    good = srv.hub.links.token(case.number)
    for junk in ("v1.1.\u00e9", good[:-1] + "\u00e9", "v1.\u0661\u0662\u0663.abc"):
        assert not srv.hub.links.verify(case.number, junk)
    expected = _request(srv, "GET", f"/api/case/{case.number}", None)
    assert expected[0] == 404
    for raw in ("v1.1.\u00e9".encode().decode("latin-1"), (good[:-1] + "\u00e9").encode().decode("latin-1")):
        assert _request(srv, "GET", f"/api/case/{case.number}", raw) == expected
        assert _request(srv, "POST", f"/api/case/{case.number}/info", raw, {"text": "hi"}) == expected
    assert [e.kind for e in srv.hub.cases.timeline(case.number)] == ["created"]


def test_the_page_and_api_headers(srv: RunningHub) -> None:
    req = urllib.request.Request(srv.url + "/case/HL-20261203-0001")
    with urllib.request.urlopen(req, timeout=10) as r:
        csp = r.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert r.headers["Referrer-Policy"] == "no-referrer" and r.headers["Cache-Control"] == "no-store"
        html = r.read().decode()
    assert "<script src=\"/case.js\"></script>" in html and "<script>" not in html and "http" not in html.split(
        "<body>")[1]
    for asset in ("/case.js", "/case.css"):
        status, body = srv.get(asset)
        assert status == 200 and body


def test_the_page_texts_come_from_the_one_catalogue(srv: RunningHub) -> None:
    """The page's script has no texts of its own: it reads bot.i18n's ``case_page.*`` entries,
    served as /case-texts.js and loaded before it."""
    from bot.i18n import LANGS, page_texts, t

    html = (WEB_DIR / "case.html").read_text()
    assert html.index('<script src="/case-texts.js"></script>') < html.index('<script src="/case.js"></script>')
    status, body = srv.get("/case-texts.js")
    assert status == 200
    prefix, _, rest = body.decode().partition("=")
    assert prefix.strip() == "window.HumanlineCaseTexts" and rest.strip().endswith(";")
    served = json.loads(rest.strip().removesuffix(";"))
    assert served == page_texts("case_page") and set(served) == set(LANGS)
    assert served["zh-Hant"]["codes"]["already_rated"] == t("case_page.codes.already_rated", "zh-Hant")
    assert served["en"]["ev"]["created"] == "Case opened"
    script = (WEB_DIR / "case.js").read_text()
    for lang in LANGS:  # not one of the page's texts is written in its script
        for value in served[lang].values():
            for text in value.values() if isinstance(value, dict) else [value]:
                assert text not in script or len(text) < 4, text


def test_the_customer_adds_information_and_agents_see_it_but_never_their_notes(srv: RunningHub) -> None:
    case = _open(srv)
    token = srv.hub.links.token(case.number)
    srv.hub.cases.add_note(case.number, "agent:alice", "customer sounds like a reseller")
    status, view = _post(srv, case.number, "info", token, {"text": "Order AB1234567, crashes on login"})
    assert status == 200
    kinds = [(e["kind"], e.get("detail")) for e in view["events"]]
    assert ("customer_info", "Order AB1234567, crashes on login") in kinds
    assert all(e["kind"] not in ("note", "sla_breached") for e in view["events"])
    assert "reseller" not in json.dumps(view)
    assert all("alice" not in json.dumps(e) for e in view["events"])
    # The agent's case panel has it, from the customer.
    details = srv.hub.conversations.case_details(case.id)
    (info,) = [e for e in details["timeline"] if e["kind"] == "customer_info"]
    assert info["detail"] == "Order AB1234567, crashes on login" and info["actor"] == "customer:visitor-1"
    # Validation: empty, too long, not text, not JSON.
    assert _post(srv, case.number, "info", token, {"text": "   "})[0] == 400
    assert _post(srv, case.number, "info", token, {"text": "x" * 2001})[0] == 400
    assert _post(srv, case.number, "info", token, {"text": 5})[0] == 400
    assert _post(srv, case.number, "info", token, ["text"])[0] == 400
    with srv.db.session() as s:
        assert [(e.actor, e.action, e.target) for e in audit.entries(s, target=case.number)] == [
            ("customer:visitor-1", "case_page_add_info", case.number)]


def test_a_link_the_customer_pastes_reaches_the_agents_case_panel_without_its_token(srv: RunningHub) -> None:
    """A customer who pastes their own link into the page (or the chat that opened the case) gives
    the agent no credential: the console's case panel shows it as the transcript does (``#t=…``)."""
    url = srv.hub.links.url(_open(srv).number)
    case = srv.hub.cases.open_case("service", visitor_id="visitor-1", description=f"see {url}", lang="en")
    token = srv.hub.links.token(case.number)
    assert _post(srv, case.number, "info", token, {"text": f"the old link {url} says nothing"})[0] == 200
    details = srv.hub.conversations.case_details(case.id)
    assert details is not None
    assert _token(url) not in json.dumps(details)
    (info,) = [e for e in details["timeline"] if e["kind"] == "customer_info"]
    assert info["detail"] == f"the old link {url.split('#')[0]}#t=… says nothing"
    assert details["description"] == f"see {url.split('#')[0]}#t=…"
    # The customer's own page still shows what they wrote.
    assert any(e.get("detail") == f"the old link {url} says nothing" for e in _view(srv, case.number, token)["events"])


def test_confirm_only_a_resolved_case(srv: RunningHub) -> None:
    case = _open(srv)
    token = srv.hub.links.token(case.number)
    status, body = _post(srv, case.number, "confirm", token, {})
    assert status == 409 and body["error"] == "wrong_stage"
    assert _view(srv, case.number, token)["can_confirm"] is False
    srv.hub.cases.advance(case.number, "resolved", "agent:alice")
    view = _view(srv, case.number, token)
    assert view["can_confirm"] and view["can_reopen"] and view["next_update_due_at"] is None
    status, view = _post(srv, case.number, "confirm", token, {})
    assert status == 200 and view["stage"] == "confirmed" and not view["can_confirm"]
    assert [s["state"] for s in view["stages"]] == ["done"] * 4 + ["current"]
    assert _post(srv, case.number, "confirm", token, {})[0] == 409
    with srv.db.session() as s:   # one entry: the refused attempts left none
        assert [e.action for e in audit.entries(s, target=case.number)] == ["case_page_confirm"]


def test_reopen_within_the_window_and_a_clear_answer_after_it(srv: RunningHub) -> None:
    window = srv.hub.config.sla.reopen_window_days
    case = _open(srv)
    token = srv.hub.links.token(case.number)
    assert _post(srv, case.number, "reopen", token, {})[1]["error"] == "wrong_stage"   # still open
    srv.hub.cases.advance(case.number, "resolved", "agent:alice")
    status, view = _post(srv, case.number, "reopen", token, {"reason": "still crashes"})
    assert status == 200 and view["stage"] == "verifying" and view["reopen_until"] is None
    assert [s["state"] for s in view["stages"]] == ["done", "current", "todo", "todo", "todo"]
    assert any(e["kind"] == "reopened" and e.get("detail") == "still crashes" for e in view["events"])
    # Resolved again, then the window passes.
    srv.hub.cases.advance(case.number, "resolved", "agent:alice")
    with srv.db.session() as s:
        s.execute(update(Case).where(Case.id == case.id).values(resolved_at=utcnow() - timedelta(days=window, hours=1)))
    view = _view(srv, case.number, token)
    assert view["can_reopen"] is False and view["reopen_until"] is not None
    status, body = _post(srv, case.number, "reopen", token, {"reason": "again"})
    assert status == 409 and body["error"] == "reopen_window_closed" and "chat" in body["message"]
    assert _view(srv, case.number, token)["stage"] == "resolved"


def test_rate_once_with_an_optional_comment(srv: RunningHub) -> None:
    case = _open(srv)
    token = srv.hub.links.token(case.number)
    assert _post(srv, case.number, "rate", token, {"score": 5})[0] == 409          # not resolved yet
    srv.hub.cases.advance(case.number, "resolved", "agent:alice")
    for bad in ({"score": 6}, {"score": 0}, {"score": "5"}, {"score": True}, {}, {"score": 4, "comment": 3}):
        assert _post(srv, case.number, "rate", token, bad)[0] == 400, bad
    assert _view(srv, case.number, token)["can_rate"] is True
    status, view = _post(srv, case.number, "rate", token, {"score": 4, "comment": "quick and kind"})
    assert status == 200 and view["rating"] == 4 and view["can_rate"] is False
    assert ("rating_comment", "quick and kind") in [(e["kind"], e.get("detail")) for e in view["events"]]
    status, body = _post(srv, case.number, "rate", token, {"score": 1})
    assert status == 409 and body["error"] == "already_rated"
    assert srv.hub.cases.get(case.number).satisfaction == 4


def test_the_specialist_is_the_agent_who_took_the_case(srv: RunningHub) -> None:
    case = _open(srv)
    token = srv.hub.links.token(case.number)
    agent = srv.create_agent("mei", display_name="Mei Lin", skills=("general", "tech_support"))
    with srv.db.session() as s:
        s.add(Conversation(id="conv-x", visitor_id="visitor-1", status="agent", agent_id=agent.id, case_id=case.id))
        s.flush()
        s.add(Handoff(conversation_id="conv-x", queue=case.queue, reason="case_opened", case_id=case.id,
                      agent_id=agent.id, assigned_at=utcnow()))
    assert _view(srv, case.number, token)["specialist"] == "Mei Lin"
    assert "mei" not in json.dumps(_view(srv, case.number, token)["events"])


def test_requests_are_limited_per_link(srv: RunningHub) -> None:
    from bot.hub.case_page import WRITES_PER_MINUTE

    case = _open(srv)
    token = srv.hub.links.token(case.number)
    answers = [_post(srv, case.number, "info", token, {"text": f"detail {i}"})[0] for i in range(WRITES_PER_MINUTE + 1)]
    assert answers == [200] * WRITES_PER_MINUTE + [429]
    other = srv.hub.links.token(case.number, ttl_s=100)   # another link is counted on its own
    assert _post(srv, case.number, "info", other, {"text": "one more"})[0] == 200


async def test_the_widget_status_names_the_case_with_its_link(tmp_path: Path) -> None:
    def script(text: str, n: int) -> BrainTurn:
        return turn("I'll get you a person.", intent="request_refund", actions=["action_handoff"],
                    slots_set={"handoff_queue": "finance_compliance", "handoff_reason": "customer_request"})

    with running_hub(tmp_path, ScriptedBrain(script)) as srv:
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("I want my money back")
            queued = await chat.wait_for(lambda f: f["type"] == "status" and f.get("case_id"))
        number = queued["case_id"]
        assert queued["case_url"].startswith(f"{srv.settings.public_url}/case/{number}#t=")
        token = _token(queued["case_url"])
        assert _view(srv, number, token)["number"] == number
        with srv.db.session() as s:
            visitor = s.execute(select(Case.visitor_id).where(Case.number == number)).scalar_one()
            assert s.get(Visitor, visitor) is not None


async def test_the_agent_holding_the_conversation_sees_the_added_information_at_once(tmp_path: Path) -> None:
    link = "Follow your case online: http://127.0.0.1:8080/case/HL-20261203-0001#t=v1.1999999999.secretTOKEN"

    def script(text: str, n: int) -> BrainTurn:
        if n == 1:
            return turn(link, intent="check_case_status", resolved=True)
        return turn("I'll get you a person.", intent="complaint_service", actions=["action_handoff"],
                    slots_set={"handoff_queue": "service_supervision", "handoff_reason": "customer_request"})

    with running_hub(tmp_path, ScriptedBrain(script)) as srv:
        async with ChatClient(srv.ws_url, lang="en") as chat:
            await chat.say_and_ack("where is my case")
            said = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "bot")
            assert said["text"] == link                  # the customer gets the link with its token
            await chat.say_and_ack("the app crashes")
            queued = await chat.wait_for(lambda f: f["type"] == "status" and f.get("case_url"))
            srv.create_agent("mei", skills=("general", "service_supervision"), display_name="Mei Lin")
            mei = AgentClient(srv.agent_ws_url, srv.login("mei"))
            assert (await mei.connect())["type"] == "ready"
            try:
                await mei.send({"type": "claim", "conversation_id": chat.conversation_id})
                assigned = await mei.wait_for(lambda f: f["type"] == "assigned")
                # The agent sees the bot's reply without the token (the customer's credential).
                (bot_line,) = [m["text"] for m in assigned["transcript"] if m["sender"] == "bot"]
                assert bot_line == link.replace("secretTOKEN", "…").replace("v1.1999999999.", "")
                number, token = queued["case_id"], _token(queued["case_url"])
                status, body = await asyncio.to_thread(
                    _post, srv, number, "info", token, {"text": "it started after the update"})
                assert status == 200, body
                frame = await mei.wait_for(lambda f: f["type"] == "case" and any(
                    e["kind"] == "customer_info" for e in f["case"]["timeline"]))
                assert frame["conversation_id"] == chat.conversation_id
                (info,) = [e for e in frame["case"]["timeline"] if e["kind"] == "customer_info"]
                assert info["detail"] == "it started after the update"
                assert _view(srv, number, token)["specialist"] == "Mei Lin"
            finally:
                await mei.close()


def test_the_public_url_and_the_action_servers_links_come_from_the_environment(tmp_path: Path, monkeypatch) -> None:
    from bot.services.case_links import links_from_env
    from bot.settings import Settings
    from bot.store.db import Database

    for name in ("HUMANLINE_PUBLIC_URL", "HUMANLINE_HOST", "HUMANLINE_SECRET", "HUMANLINE_SECRET_FILE",
                 "HUMANLINE_SECRET_PREVIOUS", "HUMANLINE_CASE_LINK_TTL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HUMANLINE_PORT", "9001")
    assert Settings.from_env().public_url == "http://127.0.0.1:9001"
    monkeypatch.setenv("HUMANLINE_PUBLIC_URL", "https://help.example.com/")
    assert Settings.from_env().public_url == "https://help.example.com"
    monkeypatch.setenv("HUMANLINE_PUBLIC_URL", "help.example.com")
    with pytest.raises(ValueError):
        Settings.from_env()
    monkeypatch.setenv("HUMANLINE_PUBLIC_URL", "https://help.example.com")

    # The action server signs with the hub's key: HUMANLINE_SECRET, else the SQLite demo's stored one.
    db = Database(f"sqlite:///{tmp_path / 'demo.db'}")
    db.migrate()
    try:
        demo = links_from_env(db)
        assert demo is not None and demo.public_url == "https://help.example.com"
        token = demo.token("HL-20261203-0001")
        assert CaseLinks(db.stored_secret("visitor_token")).verify("HL-20261203-0001", token)
        monkeypatch.setenv("HUMANLINE_SECRET", "s" * 64)
        monkeypatch.setenv("HUMANLINE_CASE_LINK_TTL", "60")
        configured = links_from_env(db)
        assert configured is not None and configured.ttl_s == 60
        assert CaseLinks("s" * 64).verify("HL-20261203-0001", configured.token("HL-20261203-0001"))
        assert not CaseLinks("s" * 64).verify("HL-20261203-0001", token)
        monkeypatch.delenv("HUMANLINE_SECRET")
        assert links_from_env(None) is None    # no key anywhere: replies go without a link
    finally:
        db.dispose()


# --------------------------------------------------------------- the service rules (SQLite and PostgreSQL)


def test_the_reopen_window_is_counted_from_the_resolution(cases: Any, clock: Any) -> None:
    from bot.services.cases import ReopenWindowClosed

    days = cases.config.sla.reopen_window_days
    view = cases.open_case("service", visitor_id="v1", description="broken", lang="en")
    assert cases.reopen_until(view) is None
    resolved = cases.advance(view.number, "resolved", "agent:alice")
    assert cases.reopen_until(resolved) == clock.now + timedelta(days=days)
    clock.advance(days=days)                                   # the last moment still counts
    assert cases.reopen(view.number, "v1", "again").stage == "verifying"
    cases.advance(view.number, "resolved", "agent:alice")
    cases.confirm(view.number, "v1")                           # confirming does not move the window
    clock.advance(days=days, seconds=1)
    with pytest.raises(ReopenWindowClosed):
        cases.reopen(view.number, "v1", "and again")
    assert cases.get(view.number).stage == "confirmed"
    text = cases.reopen_window_text(cases.get(view.number), "zh-Hant")
    assert view.number in text and "重新開啟" in text


def test_one_rating_with_a_comment_and_customer_information(cases: Any, db: Any) -> None:
    from bot.services.cases import AlreadyRated, CaseNotFound

    view = cases.open_case("billing", visitor_id="v1", description="charged twice", lang="en")
    cases.add_customer_info(view.number, "v1", "  the second charge was on 3 Nov  ")
    with pytest.raises(ValueError):
        cases.add_customer_info(view.number, "v1", " ")
    with pytest.raises(CaseNotFound):
        cases.add_customer_info(view.number, "someone-else", "hi")
    cases.advance(view.number, "resolved", "agent:alice")
    with pytest.raises(ValueError):
        cases.rate(view.number, "v1", 4, comment="x" * 2001)
    cases.rate(view.number, "v1", 4, comment="fine", once=True)
    with pytest.raises(AlreadyRated):
        cases.rate(view.number, "v1", 2, once=True)
    assert cases.rate(view.number, "v1", 5).satisfaction == 5  # the bot's rule: a new rating replaces
    customer = [(e.kind, e.detail) for e in cases.timeline(view.number, visitor_id="v1")]
    assert ("customer_info", "the second charge was on 3 Nov") in customer
    assert ("rating_comment", "fine") in customer
    internal = [n.payload for n in pending(db) if n.channel == "webhook"]
    assert [p["event"] for p in internal] == ["customer_info_added"]
    assert "second charge" not in json.dumps(internal)   # the team is told, without the text

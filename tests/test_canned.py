"""Canned replies (issue 16, item 4): validation, rendering and the reply-script check as pure
functions, then management, authorisation and rendering through the real hub."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from bot.brain import BrainTurn
from bot.client import ChatClient
from bot.services.canned import (
    DEFAULTS,
    CannedError,
    CannedService,
    fill,
    marker,
    placeholders,
    script_mismatch,
    unfilled,
)
from bot.services.config import HumanlineConfig
from bot.services.conversations import ConversationService
from bot.services.queues import QueueService
from bot.store.db import Database
from bot.store.models import AuditEntry, Case
from tests.hubtools import AgentClient, RunningHub, ScriptedBrain, running_hub, settle, turn

ALL = ("general", "finance_compliance", "account_services")

# ---- pure functions -------------------------------------------------------------------------


def test_placeholders_are_checked_and_unknown_ones_named() -> None:
    assert placeholders("Case {case_number} in {queue}, by {eta}; {case_number}") == ["case_number", "queue", "eta"]
    assert placeholders("literal {{braces}} only") == []
    with pytest.raises(CannedError) as e:
        placeholders("Dear {customer}, …")
    assert e.value.code == "unknown_placeholder" and "{customer}" in e.value.message
    assert "{customer_name}" in e.value.message  # the error lists what may be used
    for bad in ("unbalanced { brace", "positional {}", "a format {eta:>20}", "a conversion {queue!r}"):
        with pytest.raises(CannedError) as e:
            placeholders(bad)
        assert e.value.code == "bad_template", bad


def test_a_missing_value_becomes_a_visible_marker_never_a_blank() -> None:
    text = fill("Hi {customer_name}, case {case_number} ({queue}) {{ok}}",
                {"customer_name": None, "case_number": "HL-1", "queue": "  "})
    assert text == f"Hi {marker('customer_name')}, case HL-1 ({marker('queue')}) {{ok}}"
    assert unfilled(text) == ["customer_name", "queue"]
    assert unfilled("nothing left") == []


@pytest.mark.parametrize(
    ("reply", "customer", "expected"),
    [
        ("Your refund is on its way.", "en", None),
        ("您的退款正在处理中。", "zh-Hans", None),
        ("您的退款正在處理中。", "zh-Hant", None),
        ("Your refund is on its way.", "zh-Hans", ("en", "zh-Hans")),
        ("Your refund is on its way.", "zh-Hant", ("en", "zh-Hant")),
        ("您的退款正在处理中。", "en", ("zh-Hans", "en")),
        ("您的退款正在处理中。", "zh-Hant", ("zh-Hans", "zh-Hant")),
        ("您的退款正在處理中。", "zh-Hans", ("zh-Hant", "zh-Hans")),
        ("您的退款正在處理中。", "en", ("zh-Hant", "en")),
        ("你好", "zh-Hant", None),           # reads the same in both scripts
        ("HL-20261203-0001", "zh-Hans", None),  # no script of its own
        ("Your refund is on its way.", None, None),  # the customer's script is not known yet
    ],
)
def test_script_mismatch_in_all_three_scripts(reply: str, customer: str | None,
                                              expected: tuple[str, str] | None) -> None:
    got = script_mismatch(reply, customer)
    assert (None if got is None else (got.reply_script, got.customer_script)) == expected


def test_the_store_keeps_one_reply_per_shortcut_and_language_and_seeds_the_demo_once(
    db: Database, config: HumanlineConfig
) -> None:
    conversations = ConversationService(db)
    service = CannedService(db, conversations, QueueService(db, config))
    assert service.seed_defaults("demo") == len(DEFAULTS)
    assert service.seed_defaults("demo") == 0  # not on a table that has replies
    assert {r["lang"] for r in service.replies()} == {"en", "zh-Hans", "zh-Hant"}
    with pytest.raises(CannedError) as e:
        service.create("agent:sue", "HELLO", "en", "Hi again")  # shortcuts are lower-cased
    assert e.value.code == "duplicate_shortcut"
    # Rendered for a conversation without a case: every unknown value is a marker.
    cid = conversations.create_conversation(conversations.create_visitor("en"), lang="zh-Hant").id
    rendered = service.render(cid, shortcut="update", agent_name="Sue")
    assert rendered["reply"]["lang"] == "zh-Hant"  # the customer's script
    assert rendered["missing"] == ["case_number", "queue", "eta"] and marker("eta") in rendered["text"]


# ---- through the real hub ---------------------------------------------------------------------
# ---- through the real hub ---------------------------------------------------------------------


def _refund(text: str, n: int) -> BrainTurn:
    return turn("I'll get you a person.", intent="request_refund", actions=["action_handoff"],
                slots_set={"handoff_queue": "finance_compliance", "handoff_reason": "customer_request"})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RunningHub]:
    with running_hub(tmp_path, ScriptedBrain(_refund), agent_reply_timeout_s=300) as srv:
        srv.create_agent("alice", skills=ALL, display_name="Alice Chen")
        srv.create_agent("bob", skills=ALL, display_name="Bob Li")
        srv.create_agent("sue", skills=(), display_name="Sue Park", role="supervisor")
        yield srv


async def _agent(srv: RunningHub, username: str) -> AgentClient:
    token = await asyncio.to_thread(srv.login, username)
    agent = AgentClient(srv.agent_ws_url, token)
    assert (await agent.connect())["type"] == "ready"
    return agent


async def _ask(agent: AgentClient, frame: dict[str, Any], answer: str) -> dict[str, Any]:
    """Send ``frame`` and return its answer (``answer`` type) or the error frame."""
    await agent.send(frame)
    return await agent.wait_for(lambda f: f["type"] in (answer, "error"))


async def _save(agent: AgentClient, **fields: Any) -> dict[str, Any]:
    return await _ask(agent, {"type": "canned_save", **fields}, "canned_saved")


async def test_supervisors_manage_canned_replies_and_agents_cannot(server: RunningHub) -> None:
    sue, alice = await _agent(server, "sue"), await _agent(server, "alice")
    saved = await _save(sue, shortcut="Refund", lang="en", title="Refund ETA",
                        body="Your refund for case {case_number} is due by {eta}.")
    assert saved["type"] == "canned_saved", saved
    reply = saved["reply"]
    assert reply["shortcut"] == "refund" and reply["placeholders"] == ["case_number", "eta"]

    # The same shortcut in another language is another reply; in the same language it is refused.
    zh = await _save(sue, shortcut="refund", lang="zh-Hans", body="您的案件 {case_number} 的退款将在 {eta} 前完成。")
    assert zh["type"] == "canned_saved"
    dup = await _save(sue, shortcut="refund", lang="en", body="Another text")
    assert dup["type"] == "error" and dup["code"] == "duplicate_shortcut"
    dup = await _save(sue, id=zh["reply"]["id"], lang="en")  # moving it onto the English one
    assert dup["type"] == "error" and dup["code"] == "duplicate_shortcut" and "'refund'" in dup["message"]
    unknown = await _save(sue, shortcut="x", lang="en", body="Dear {customer}")
    assert unknown["code"] == "unknown_placeholder" and "{customer}" in unknown["message"]
    empty = await _save(sue, shortcut="x", lang="en", body="   ")
    assert empty["code"] == "empty_body"
    bad_lang = await _save(sue, shortcut="x", lang="fr", body="Bonjour")
    assert bad_lang["code"] == "invalid_lang"

    # An agent may list, not manage.
    refused = await _save(alice, shortcut="mine", lang="en", body="Hello")
    assert refused["type"] == "error" and refused["code"] == "forbidden"
    refused = await _ask(alice, {"type": "canned_save", "id": reply["id"], "body": "Changed"}, "canned_saved")
    assert refused["code"] == "forbidden"
    refused = await _ask(alice, {"type": "canned_delete", "id": reply["id"]}, "canned_deleted")
    assert refused["code"] == "forbidden"
    listed = await _ask(alice, {"type": "canned_list", "lang": "en"}, "canned_list")
    assert [r["body"] for r in listed["replies"]] == ["Your refund for case {case_number} is due by {eta}."]

    # The supervisor edits and deletes; every change is audited.
    edited = await _ask(sue, {"type": "canned_save", "id": reply["id"], "body": "Refund of {case_number}: {eta}."},
                        "canned_saved")
    assert edited["reply"]["body"] == "Refund of {case_number}: {eta}." and edited["reply"]["shortcut"] == "refund"
    gone = await _ask(sue, {"type": "canned_delete", "id": reply["id"]}, "canned_deleted")
    assert gone["id"] == reply["id"]
    missing = await _ask(sue, {"type": "canned_delete", "id": reply["id"]}, "canned_deleted")
    assert missing["code"] == "not_found"
    listed = await _ask(alice, {"type": "canned_list"}, "canned_list")
    assert [(r["shortcut"], r["lang"]) for r in listed["replies"]] == [("refund", "zh-Hans")]
    with server.db.session() as s:
        actions = list(s.execute(select(AuditEntry.action).where(AuditEntry.actor == "agent:sue",
                                                                 AuditEntry.action.like("canned_%"))).scalars())
    assert actions == ["canned_created", "canned_created", "canned_updated", "canned_deleted"]
    await sue.close()
    await alice.close()


async def test_canned_reply_rest_api_is_for_supervisors(server: RunningHub) -> None:
    import json
    import urllib.error
    import urllib.request

    def call(method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(server.url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    sue, alice = server.login("sue"), server.login("alice")
    body = {"shortcut": "hi", "lang": "zh-Hant", "body": "您好，我是{agent_name}。"}
    assert call("POST", "/api/supervisor/canned", None, body)[0] == 401
    assert call("POST", "/api/supervisor/canned", alice, body)[0] == 403
    status, created = await asyncio.to_thread(call, "POST", "/api/supervisor/canned", sue, body)
    assert status == 201 and created["reply"]["lang"] == "zh-Hant"
    rid = created["reply"]["id"]
    assert call("POST", "/api/supervisor/canned", sue, body) == (409, {
        "error": "duplicate_shortcut", "message": "the shortcut 'hi' already has a zh-Hant reply"})
    assert call("POST", "/api/supervisor/canned", sue, {**body, "shortcut": "x", "body": "{eta!r}"})[0] == 400
    assert call("PUT", f"/api/supervisor/canned/{rid}", alice, {"body": "x"})[0] == 403
    status, edited = call("PUT", f"/api/supervisor/canned/{rid}", sue, {"title": "問候"})
    assert status == 200 and edited["reply"]["title"] == "問候" and edited["reply"]["body"] == body["body"]
    assert call("GET", "/api/canned", None)[0] == 401
    status, listed = call("GET", "/api/canned?lang=zh-Hant", alice)
    assert status == 200 and [r["id"] for r in listed["replies"]] == [rid]
    assert call("GET", "/api/canned?lang=en", alice)[1]["replies"] == []
    assert call("DELETE", f"/api/supervisor/canned/{rid}", alice)[0] == 403
    assert call("DELETE", f"/api/supervisor/canned/{rid}", sue)[0] == 200
    assert call("DELETE", f"/api/supervisor/canned/{rid}", sue)[0] == 404


async def _handed_off(srv: RunningHub, lang: str, text: str) -> tuple[ChatClient, str]:
    """A customer whose refund request was handed off with nobody online: a case is opened."""
    chat = ChatClient(srv.ws_url, lang=lang)
    await chat.connect()
    await chat.say_and_ack(text)
    queued = await chat.wait_for(lambda f: f["type"] == "status" and f["status"] == "queued" and f.get("case_id"))
    await settle(srv, chat)
    return chat, str(queued["case_id"])


async def test_rendering_fills_in_the_real_case_number_queue_and_eta(server: RunningHub) -> None:
    chat, number = await _handed_off(server, "zh-Hans", "我要退款，订单 AB1234567")
    sue = await _agent(server, "sue")
    for lang, body in (
        ("en", "Hi {customer_name}, case {case_number} is with {queue}; update by {eta}. {agent_name}"),
        ("zh-Hans", "{customer_name}您好，案件 {case_number} 由{queue}处理，{eta} 前答复。{agent_name}"),
    ):
        assert (await _save(sue, shortcut="status", lang=lang, body=body))["type"] == "canned_saved"

    alice = await _agent(server, "alice")
    # alice is available with the queue's skill: the waiting conversation is assigned to her.
    await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == chat.conversation_id)
    with server.db.session() as s:
        case = s.execute(select(Case).where(Case.number == number)).scalar_one()
        eta = case.next_update_due_at.strftime("%Y-%m-%d %H:%M UTC")
    assert case.queue == "finance_compliance"

    listed = await _ask(alice, {"type": "canned_list", "conversation_id": chat.conversation_id}, "canned_list")
    assert listed["customer_lang"] == "zh-Hans" and set(listed) == {"type", "conversation_id", "customer_lang",
                                                                     "replies"}
    texts = {r["lang"]: r for r in listed["replies"]}
    assert texts["zh-Hans"]["text"] == (f"{marker('customer_name')}您好，案件 {number} 由财务合规组处理，"
                                        f"{eta} 前答复。Alice Chen")
    assert texts["en"]["text"] == (f"Hi {marker('customer_name')}, case {number} is with Finance compliance; "
                                   f"update by {eta}. Alice Chen")
    assert texts["zh-Hans"]["missing"] == ["customer_name"]  # the store keeps no customer name

    # By shortcut: the customer's language unless another is asked for; with the script check.
    one = await _ask(alice, {"type": "canned_render", "conversation_id": chat.conversation_id,
                             "shortcut": "status"}, "canned_rendered")
    assert one["reply"]["lang"] == "zh-Hans" and number in one["text"] and one["mismatch"] is None
    en = await _ask(alice, {"type": "canned_render", "conversation_id": chat.conversation_id,
                            "shortcut": "status", "lang": "en"}, "canned_rendered")
    assert en["mismatch"] == {"reply_script": "en", "customer_script": "zh-Hans"}

    # Another agent may not render for a conversation it does not hold.
    bob = await _agent(server, "bob")
    refused = await _ask(bob, {"type": "canned_list", "conversation_id": chat.conversation_id}, "canned_list")
    assert refused["type"] == "error" and refused["code"] == "forbidden"

    # A text still holding a fill-in marker never reaches the customer.
    await alice.send({"type": "message", "conversation_id": chat.conversation_id, "text": texts["zh-Hans"]["text"],
                      "client_msg_id": "m1"})
    err = await alice.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "unfilled_placeholder" and "customer_name" in err["message"]
    filled = texts["zh-Hans"]["text"].replace(marker("customer_name"), "王女士")
    await alice.send({"type": "message", "conversation_id": chat.conversation_id, "text": filled,
                      "client_msg_id": "m2", "check_script": True})
    got = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "agent")
    assert got["text"] == filled and number in got["text"] and eta in got["text"]
    assert [m["text"] for m in chat.messages("agent")] == [filled]
    for client in (chat, sue, alice, bob):
        await client.close()


@pytest.mark.parametrize(
    ("lang", "customer_text", "reply", "mismatch"),
    [
        ("en", "I want my money back", "您的退款正在處理中。", {"reply_script": "zh-Hant", "customer_script": "en"}),
        ("zh-Hans", "我要退款", "Your refund is being processed.",
         {"reply_script": "en", "customer_script": "zh-Hans"}),
        ("zh-Hant", "我要退錢", "您的退款正在处理中。", {"reply_script": "zh-Hans", "customer_script": "zh-Hant"}),
    ],
    ids=["en", "zh-Hans", "zh-Hant"],
)
async def test_a_reply_in_another_script_is_flagged_and_sent_only_when_confirmed(
    server: RunningHub, lang: str, customer_text: str, reply: str, mismatch: dict[str, str]
) -> None:
    chat, _number = await _handed_off(server, lang, customer_text)
    alice = await _agent(server, "alice")
    # alice is available with the queue's skill: the waiting conversation is assigned to her.
    await alice.wait_for(lambda f: f["type"] == "assigned" and f["conversation_id"] == chat.conversation_id)
    cid = chat.conversation_id

    check = await _ask(alice, {"type": "script_check", "conversation_id": cid, "text": reply}, "script_check")
    assert check["customer_lang"] == lang and check["mismatch"] == mismatch and check["text"] == reply
    # The customer's own script is fine.
    same = await _ask(alice, {"type": "script_check", "conversation_id": cid, "text": customer_text}, "script_check")
    assert same["mismatch"] is None and same["reply_lang"] == lang

    # With the check the hub refuses, and nothing reaches the customer; confirmed, it goes out.
    await alice.send({"type": "message", "conversation_id": cid, "text": reply, "client_msg_id": "c1",
                      "check_script": True})
    err = await alice.wait_for(lambda f: f["type"] == "error")
    assert err["code"] == "script_mismatch" and err["conversation_id"] == cid
    await alice.send({"type": "message", "conversation_id": cid, "text": reply, "client_msg_id": "c2"})
    got = await chat.wait_for(lambda f: f["type"] == "message" and f["sender"] == "agent")
    assert got["text"] == reply and len(chat.messages("agent")) == 1
    await chat.close()
    await alice.close()

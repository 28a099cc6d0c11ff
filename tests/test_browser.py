"""The widget and the agent console in a real browser: Debian's chromium driven by Playwright.

The ``live`` tests run the whole system (hub + action server + trained model). ``make test``
installs chromium (scripts/install-browser.sh) and trains the model first; a missing browser or
model is a failure, not a skip.

The ``seen`` tests run the real hub (real store, sockets, guard, queues, cases) with a scripted
brain instead of the model, and walk through every view of the console and the widget at a
desktop size (1280×800) and a phone size (375×740), checking with :func:`assert_seen` what a
person sees — not only what is in the DOM. They also take the README's screenshots.

The ``fake`` tests serve the real ``bot/web`` files from a small fake hub written here with the
``websockets`` library, which speaks the customer protocol (/work/shared/PROTOCOL.md,
docs/protocol.md) and the agent protocol (docs/hub.md) frame by frame. They check what the
pages do with frames the real system sends rarely or at awkward moments (a refused token, a live
frame before the replay, suggestion buttons, a reconnecting console) without the model.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime, timedelta, timezone
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from tests.live_system import LiveSystem, start_live_system

pytestmark = [pytest.mark.browser]


def live(test: Callable[..., None]) -> Callable[..., None]:
    """An end-to-end test: the real hub, action server and trained model."""
    return pytest.mark.slow(pytest.mark.model(test))


CHROMIUM = "/usr/bin/chromium"
AGENT = ("alice", "Alice Chen", "correct-horse-battery")
SHOTS = Path(os.environ.get("HUMANLINE_SCREENSHOTS", "")) if os.environ.get("HUMANLINE_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, trained_model: Path) -> Iterator[LiveSystem]:
    with start_live_system(tmp_path_factory.mktemp("browser"), trained_model, [AGENT]) as live:
        yield live


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run scripts/install-browser.sh (make test does)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        yield b
        b.close()


def _open_widget(page: object, url: str) -> None:
    page.goto(url + "/")  # type: ignore[attr-defined]
    page.get_by_role("button", name=re.compile("Chat with us|在线客服|線上客服")).click()  # type: ignore[attr-defined]
    page.get_by_role("dialog").wait_for()  # type: ignore[attr-defined]


def _say(page: object, text: str) -> None:
    box = page.locator(".hl-input")  # type: ignore[attr-defined]
    box.fill(text)
    box.press("Enter")


def assert_seen(page: Any, locator: Any, *, scroll: bool = True) -> None:
    """What a person sees: ``locator`` is visible, its box lies inside the viewport (scrolled
    into view first, as a person would scroll, unless ``scroll=False``), and the element at its
    centre (``document.elementFromPoint``) is the element itself or inside it — nothing covers it."""
    locator.wait_for(state="visible", timeout=15_000)
    if scroll:  # the whole element, as far as it fits (Playwright's own scroll stops at "partly visible")
        locator.scroll_into_view_if_needed()
        locator.evaluate("el => el.scrollIntoView({block: 'nearest', inline: 'nearest'})")
    assert locator.is_visible(), f"{locator} is not visible"
    box, viewport = locator.bounding_box(), page.viewport_size
    assert box is not None, f"{locator} has no box"
    assert (box["x"] >= -0.5 and box["y"] >= -0.5 and box["x"] + box["width"] <= viewport["width"] + 0.5
            and box["y"] + box["height"] <= viewport["height"] + 0.5), f"{locator} at {box} is outside {viewport}"
    covered = locator.evaluate(
        """el => { const r = el.getBoundingClientRect();
                   const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                   return top && (top === el || el.contains(top)) ? null
                        : (top ? top.outerHTML.slice(0, 160) : "nothing"); }"""
    )
    assert covered is None, f"{locator} is covered by {covered}"


def _console_login(page: Any, url: str, username: str, password: str) -> None:
    """Log in to the console the way a person does, and check that the console — not the login
    form — is what they see afterwards."""
    page.goto(url + "/console")
    for field in ("#login-username", "#login-password", "#login-form button[type=submit]"):
        assert_seen(page, page.locator(field))
    page.fill("#login-username", username)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app-view:not([hidden])")
    page.locator("#conn").filter(has_text="connected").wait_for()
    assert not page.locator("#login-form").is_visible(), "the login form is still on screen after logging in"
    for part in ("#me", "#available", "#conn", "#queues-title"):
        assert_seen(page, page.locator(part))


def _agent_login(page: object, url: str) -> None:
    _console_login(page, url, AGENT[0], AGENT[2])


def _take_over(page: object, customer_text: str, timeout_s: float = 45) -> None:
    """Get the customer's conversation on screen: claim it if it waits, or find it already
    assigned (the hub assigns waiting conversations to an available agent automatically)."""
    import time

    deadline = time.monotonic() + timeout_s
    transcript = page.locator("#transcript")  # type: ignore[attr-defined]
    while time.monotonic() < deadline:
        if customer_text in transcript.inner_text():
            return
        claim = page.locator("[data-claim]")  # type: ignore[attr-defined]
        if claim.count():
            with contextlib.suppress(Exception):  # re-rendered or assigned meanwhile: look again
                claim.first.click(timeout=2_000)
        mine = page.locator("#mine-list li")  # type: ignore[attr-defined]
        for i in range(mine.count()):
            if customer_text in transcript.inner_text():
                return
            with contextlib.suppress(Exception):
                mine.nth(i).click(timeout=2_000)
        page.wait_for_timeout(300)  # type: ignore[attr-defined]
    raise AssertionError(f"the conversation with {customer_text!r} never reached the console")


@live
def test_customer_is_handed_off_and_sees_the_agent_reply(system: LiveSystem, browser: object) -> None:
    customer = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _open_widget(customer, system.url)
    _say(customer, "I want to talk to a real person please")
    status = customer.locator(".hl-status")
    status.filter(has_text=re.compile("queue", re.I)).wait_for(timeout=30_000)

    agent = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _agent_login(agent, system.url)
    _take_over(agent, "I want to talk to a real person please")
    agent.fill("#reply-text", "Hello, this is Alice. How can I help?")
    agent.press("#reply-text", "Enter")

    reply = customer.locator(".hl-msg[data-sender=agent]").filter(has_text="this is Alice")
    reply.wait_for(timeout=20_000)
    assert "Alice Chen" in reply.inner_text()
    status.filter(has_text="Alice Chen").wait_for(timeout=20_000)
    assert_seen(customer, reply)
    customer.context.close()
    agent.context.close()


@live
def test_reload_keeps_the_history_without_duplicates(system: LiveSystem, browser: object) -> None:
    page = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _open_widget(page, system.url)
    _say(page, "hello there")
    page.locator(".hl-msg[data-sender=bot]").first.wait_for(timeout=30_000)
    bot_before = page.locator(".hl-msg[data-sender=bot]").count()
    page.reload()
    page.get_by_role("dialog").wait_for()
    page.locator(".hl-msg[data-sender=bot]").first.wait_for(timeout=20_000)
    page.wait_for_timeout(1000)  # let the whole replay arrive
    assert page.locator(".hl-msg[data-sender=customer]").filter(has_text="hello there").count() == 1
    assert page.locator(".hl-msg[data-sender=bot]").count() == bot_before
    page.context.close()


@live
def test_customer_markup_is_shown_as_text_in_the_console(system: LiveSystem, browser: object) -> None:
    attack = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned=2"><b>bold</b>'
    customer = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _open_widget(customer, system.url)
    _say(customer, "get me a human agent now")
    customer.locator(".hl-status").filter(has_text=re.compile("queue|Alice Chen", re.I)).wait_for(timeout=30_000)
    _say(customer, attack)

    agent = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _agent_login(agent, system.url)
    _take_over(agent, "get me a human agent now")
    agent.locator("#transcript .msg.customer").filter(has_text="<script>").wait_for(timeout=20_000)
    assert attack in agent.locator("#transcript").inner_text()
    assert agent.locator("#transcript b").count() == 0
    assert agent.locator("#transcript img").count() == 0
    assert agent.evaluate("window.__pwned") is None
    assert customer.evaluate("window.__pwned") is None
    customer.context.close()
    agent.context.close()


@live
def test_widget_works_on_a_375px_phone_screen(system: LiveSystem, browser: object) -> None:
    ctx = browser.new_context(  # type: ignore[attr-defined]
        viewport={"width": 375, "height": 667}, locale="zh-CN", is_mobile=True, has_touch=True
    )
    page = ctx.new_page()
    _open_widget(page, system.url)
    box = page.get_by_role("dialog").bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert page.get_by_role("button", name="发送").is_visible()  # Chinese UI from the browser language
    _say(page, "你好")
    assert_seen(page, page.locator(".hl-msg[data-sender=bot]").first)
    ctx.close()


def _widget_state(page: Any) -> dict[str, Any]:
    return page.evaluate("window.HumanlineWidget.state()")  # type: ignore[no-any-return]


def _store_key(url: str) -> str:
    return "humanline:" + url.split("://", 1)[1].rstrip("/")


@live
def test_a_forged_stored_token_starts_a_new_conversation(system: LiveSystem, browser: object) -> None:
    page = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _open_widget(page, system.url)
    _say(page, "hello there")
    page.locator(".hl-msg[data-sender=bot]").first.wait_for(timeout=30_000)
    old = _widget_state(page)["conversation_id"]
    assert old
    page.evaluate(
        """key => { const s = JSON.parse(localStorage.getItem(key)); s.visitor_token = "forged";
                    localStorage.setItem(key, JSON.stringify(s)); }""",
        _store_key(system.url),
    )
    page.reload()
    page.get_by_role("dialog").wait_for()
    page.wait_for_function(
        "old => { const s = window.HumanlineWidget.state(); return s.conversation_id && s.conversation_id !== old"
        " && s.visitor_token !== 'forged'; }",
        arg=old, timeout=20_000,
    )
    assert page.locator(".hl-msg").filter(has_text="hello there").count() == 0  # the old history is gone
    _say(page, "hi, can you help me?")
    page.locator(".hl-msg[data-sender=bot]").first.wait_for(timeout=30_000)
    page.locator(".hl-msg[data-sender=customer]:not(.hl-pending)").filter(has_text="can you help").wait_for()
    page.context.close()


@live
def test_agent_records_a_progress_update_and_extends_the_deadline(system: LiveSystem, browser: object) -> None:
    customer = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _open_widget(customer, system.url)
    _say(customer, "I need to speak to a human about my bill")
    customer.locator(".hl-status").filter(has_text="Case HL-").wait_for(timeout=30_000)  # nobody online: a case

    agent = browser.new_context(locale="en-US").new_page()  # type: ignore[attr-defined]
    _agent_login(agent, system.url)
    _take_over(agent, "I need to speak to a human about my bill")
    agent.locator("#sla-next-update").filter(has_text="due in").wait_for(timeout=10_000)
    agent.fill("#progress-text", "We found the double charge; the refund is on its way")
    agent.click("#progress-form button[type=submit]")
    agent.locator("#case-msg").filter(has_text="Progress update — saved").wait_for(timeout=10_000)
    assert "the refund is on its way" in agent.locator("#case-panel ol").inner_text()
    assert agent.locator("#sla-first-response").inner_text().startswith("answered ")

    agent.fill("#extend-hours", "48")
    agent.click("#extend-form button[type=submit]")
    agent.locator("#case-msg.error").filter(has_text="reason is required").wait_for()
    agent.fill("#extend-reason", "waiting for the bank")
    agent.click("#extend-form button[type=submit]")
    agent.locator("#case-msg").filter(has_text="Extension — saved").wait_for(timeout=10_000)
    assert "waiting for the bank (+48 h" in agent.locator("#case-panel ol").inner_text()
    assert agent.locator("#sla-next-update").inner_text() == "due in 3 d"   # 24 h + 48 h
    customer.context.close()
    agent.context.close()


# ------------------------------------------------------------------ what a person sees, real hub

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}
SUPERVISOR = ("sue", "Sue Park", "supervisor-pass-1")


def _scripted_reply(text: str, n: int) -> Any:
    """The brain of the ``seen`` tests: a greeting is answered; anything else gets a varying
    unresolved answer (a request for a person is handed off by the guard before the brain)."""
    from tests.hubtools import turn

    if "charged" in text:
        return turn("Sorry to hear that. Which order was it?", intent="complaint_billing")
    if re.search(r"\b(hello|hi)\b", text, re.I):
        return turn("Hello! I can open a complaint, tell you where your case stands, change your plan or "
                    "get you a person.", intent="greet", resolved=True)
    return turn(f"I can help with complaints, refunds, cases and plans (#{n}).", intent="out_of_scope")


@pytest.fixture(scope="module")
def hub_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The real hub with a scripted brain; alice (every queue) and the supervisor sue, both away
    (not available for automatic assignment) so that the waiting list and Claim are seen."""
    from bot.services.agents import AgentService
    from tests.hubtools import ScriptedBrain, running_hub
    from tests.live_system import ALL_QUEUES

    with running_hub(tmp_path_factory.mktemp("seen"), ScriptedBrain(_scripted_reply)) as srv:
        service = AgentService(srv.db)
        alice = srv.create_agent(AGENT[0], AGENT[2], tuple(ALL_QUEUES.split(",")), AGENT[1])
        sue = srv.create_agent(SUPERVISOR[0], SUPERVISOR[2], (), SUPERVISOR[1], role="supervisor")
        service.set_available(alice, False)
        service.set_available(sue, False)
        yield srv


def _shot(page: Any, name: str) -> None:
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / name))


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_every_view_of_the_widget_and_the_console(hub_system: Any, browser: Any, viewport: dict[str, int]) -> None:
    url, phone = hub_system.url, viewport["width"] < 500
    mobile = {"is_mobile": True, "has_touch": True} if phone else {}
    customer = browser.new_context(locale="en-US", viewport=viewport, **mobile).new_page()
    agent = browser.new_context(locale="en-US", viewport=viewport, **mobile).new_page()

    # Widget closed: the launcher. Open: title, status, input, send, "talk to a person".
    customer.goto(url + "/")
    launcher = customer.get_by_role("button", name="Chat with us")
    assert_seen(customer, launcher)
    launcher.click()
    dialog = customer.get_by_role("dialog")
    for part in (dialog.locator("#hl-title"), customer.locator(".hl-status"), customer.locator(".hl-input"),
                 customer.get_by_role("button", name="Send"), customer.get_by_role("button", name="Talk to a person")):
        assert_seen(customer, part)
    _say(customer, "hello")
    assert_seen(customer, customer.locator(".hl-msg[data-sender=bot]").filter(has_text="Hello!"))
    _say(customer, "I was charged ¥50 twice on order AB1234567")
    assert_seen(customer, customer.locator(".hl-msg[data-sender=bot]").filter(has_text="Which order"))

    # Queued: nobody available, so a case is opened and the queue status says so.
    _say(customer, "I want to talk to a person")
    queued = customer.locator(".hl-status").filter(has_text="Position 1")
    queued.wait_for(timeout=20_000)
    assert "Case HL-" in queued.inner_text()
    assert_seen(customer, queued)
    assert_seen(customer, customer.locator(".hl-msg[data-sender=system]").last)

    # Console: login (and the console, not the login form, afterwards), queues, waiting, claim.
    _console_login(agent, url, AGENT[0], AGENT[2])
    assert not agent.locator("#available").is_checked()          # alice is away, as stored
    assert_seen(agent, agent.locator("#queue-list li").first)
    claim = agent.locator("[data-claim]").first
    assert_seen(agent, claim)
    assert_seen(agent, agent.locator("#agent-list li").filter(has_text=AGENT[1]))
    claim.click()

    # Conversation: the handoff summary first, then transcript, reply box, actions; case panel.
    summary = agent.locator("#summary")
    assert_seen(agent, summary)
    text = summary.inner_text()
    for part in ("The customer asked for a person.", "English", "complaint about a bill", "order AB1234567",
                 "amount ¥50", "Which order was it?"):
        assert part in text, (part, text)
    transcript = agent.locator("#transcript")
    said = transcript.locator(".msg.customer").filter(has_text="talk to a person")
    assert_seen(agent, said)
    for part in ("#reply-text", "#reply-form button[type=submit]", "#transfer-btn", "#handback-btn", "#resolve-btn"):
        assert_seen(agent, agent.locator(part))
    assert_seen(agent, agent.locator("#case-panel dl").get_by_text("HL-", exact=False))
    assert_seen(agent, agent.locator("#sla-first-response"))
    assert_seen(agent, agent.locator("#progress-form button[type=submit]"))
    assert_seen(agent, agent.locator("#extend-form button[type=submit]"))
    agent.locator("#my-load").filter(has_text="1 / 3").wait_for()
    assert_seen(agent, agent.locator("#my-load"))

    # With an agent: typing both ways, then the reply.
    with_agent = customer.locator(".hl-status").filter(has_text="Chatting with Alice Chen")
    assert_seen(customer, with_agent)
    agent.locator("#reply-text").press_sequentially("Hello, this is Alice")
    typing = customer.locator(".hl-typing").filter(has_text="Alice Chen is typing…")
    assert_seen(customer, typing)
    customer.locator(".hl-input").press_sequentially("thank")
    assert_seen(agent, agent.locator("#typing"))
    agent.locator("#reply-text").press_sequentially(". How can I help?")
    agent.press("#reply-text", "Enter")
    reply = customer.locator(".hl-msg[data-sender=agent]").filter(has_text="How can I help?")
    assert_seen(customer, reply)
    typing.wait_for(state="hidden", timeout=5_000)                # the message ends "typing…"
    customer.locator(".hl-input").fill("")
    assert_seen(agent, transcript.locator(".msg.agent").filter(has_text="How can I help?"))
    if phone:
        _shot(customer, "widget-phone.png")
    else:
        _shot(customer, "widget.png")
        # The README's console screenshot shows the opened conversation with its handoff summary
        # on top: on screen as it is, without scrolling.
        assert_seen(agent, summary.locator("#summary-title"), scroll=False)
        assert_seen(agent, summary.get_by_text("The customer asked for a person."), scroll=False)
        _shot(agent, "console.png")

    # After a reload: the same history, once, and the agent still shown.
    customer.reload()
    customer.get_by_role("dialog").wait_for()
    assert_seen(customer, customer.locator(".hl-status").filter(has_text="Chatting with Alice Chen"))
    assert_seen(customer, customer.locator(".hl-msg[data-sender=agent]").filter(has_text="How can I help?"))
    assert customer.locator(".hl-msg[data-sender=customer]").filter(has_text="talk to a person").count() == 1

    # Supervisor view: every agent's load, queues, breaches, satisfaction, audit.
    sup = browser.new_context(locale="en-US", viewport=viewport, **mobile).new_page()
    _console_login(sup, url, SUPERVISOR[0], SUPERVISOR[2])
    toggle = sup.get_by_role("button", name="Supervisor view")
    assert_seen(sup, toggle)
    toggle.click()
    assert_seen(sup, sup.locator("#sup-title"), scroll=False)      # it scrolls itself into sight
    sup.locator("#sup-queues tr").nth(1).wait_for()
    for part in ("#sup-queues", "#sup-breaches", "#sup-satisfaction", "#sup-audit tr >> nth=1"):
        assert_seen(sup, sup.locator(part).first)
    row = sup.locator("#agent-list li").filter(has_text=AGENT[1])
    row.locator(".load").filter(has_text="1 / 3").wait_for()
    assert_seen(sup, row.locator(".load"))
    # The supervisor changes alice's limit: saved, and her load is shown against it; then back.
    limit = row.get_by_role("spinbutton", name=f"Limit for {AGENT[1]}")
    assert_seen(sup, limit)
    limit.fill("2")
    row.get_by_role("button", name="Set").click()
    assert_seen(sup, sup.locator("#capacity-msg").filter(has_text=f"Saved: {AGENT[1]} — limit 2"))
    assert_seen(sup, sup.locator("#agent-list li").filter(has_text=AGENT[1]).locator(".load").filter(has_text="1 / 2"))
    agent.locator("#my-load").filter(has_text="1 / 2").wait_for()
    row = sup.locator("#agent-list li").filter(has_text=AGENT[1])
    row.get_by_role("spinbutton", name=f"Limit for {AGENT[1]}").fill("")
    row.get_by_role("button", name="Set").click()
    sup.locator("#capacity-msg").filter(has_text="default limit").wait_for()
    agent.locator("#my-load").filter(has_text="1 / 3").wait_for()

    agent.click("#resolve-btn")
    # The conversation has an open case: the console asks what becomes of it.
    dialog = agent.get_by_role("dialog", name="Resolve the conversation")
    assert_seen(agent, dialog.get_by_label("Resolve the case too"))
    dialog.get_by_label("Resolution the customer will see").fill("Refunded the double charge.")
    assert_seen(agent, dialog.locator("#resolve-confirm"))
    dialog.locator("#resolve-confirm").click()
    agent.locator("#mine-list li").first.wait_for(state="detached")
    for page in (customer, agent, sup):
        page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_canned_replies_and_the_script_warning(hub_system: Any, browser: Any, viewport: dict[str, int]) -> None:
    """A supervisor adds a canned reply in English and one in Chinese under the same shortcut; the
    agent types "/" + the shortcut, sees the picker with the English one only (the customer writes
    English), inserts it rendered with the real case number and queue, sends it; a reply in Chinese
    gets the script warning next to the composer, and goes out only with "Send anyway"."""
    url, phone = hub_system.url, viewport["width"] < 500
    mobile = {"is_mobile": True, "has_touch": True} if phone else {}
    shortcut = f"case{viewport['width']}"
    pages = [browser.new_context(locale="en-US", viewport=viewport, **mobile).new_page() for _ in range(3)]
    sup, customer, agent = pages

    # The supervisor's management view: two replies under one shortcut, in two languages.
    _console_login(sup, url, SUPERVISOR[0], SUPERVISOR[2])
    sup.get_by_role("button", name="Supervisor view").click()
    assert_seen(sup, sup.locator("#canned-admin h3"))
    for lang, body in (("en", "Your case {case_number} is with {queue}; next update by {eta}."),
                       ("zh-Hans", "您的案件 {case_number} 由{queue}处理。")):
        sup.fill("#canned-shortcut", shortcut)
        sup.select_option("#canned-lang", lang)
        sup.fill("#canned-title-input", "Case status")
        sup.fill("#canned-body", body)
        save = sup.get_by_role("button", name="Save canned reply")
        assert_seen(sup, save)
        save.click()
        assert_seen(sup, sup.locator("#canned-msg").filter(has_text=f"Saved /{shortcut}"))
    rows = sup.locator("#canned-table tr").filter(has_text=f"/{shortcut}")
    rows.nth(1).wait_for()
    assert rows.count() == 2
    assert_seen(sup, sup.get_by_role("button", name=f"Edit /{shortcut} (en)"))

    # A customer handed off with a case; the agent claims the conversation.
    _open_widget(customer, url)
    _say(customer, "I want to talk to a person")
    customer.locator(".hl-status").filter(has_text="Case HL-").wait_for(timeout=20_000)
    number = re.search(r"HL-\d{8}-\d{4}", customer.locator(".hl-status").inner_text())
    assert number is not None
    _console_login(agent, url, AGENT[0], AGENT[2])
    agent.locator("[data-claim]").first.click()
    agent.locator("#transcript .msg.customer").filter(has_text="talk to a person").wait_for()

    # "/" + the shortcut opens the picker, in the customer's language only.
    box = agent.locator("#reply-text")
    box.click()
    box.press_sequentially("/" + shortcut[:5])
    picker = agent.locator("#canned-picker")
    assert_seen(agent, picker)
    item = picker.locator(f"[data-shortcut={shortcut}]")
    assert_seen(agent, item)
    assert item.count() == 1 and "您的案件" not in picker.inner_text()
    assert number.group(0) in item.inner_text()
    if not phone:
        _shot(agent, "console-canned.png")
    box.press("Enter")
    picker.wait_for(state="hidden")
    inserted = box.input_value()
    assert inserted.startswith(f"Your case {number.group(0)} is with Customer care; next update by 20"), inserted
    assert "[[" not in inserted and "{" not in inserted
    box.press("Enter")
    assert_seen(customer, customer.locator(".hl-msg[data-sender=agent]").filter(has_text=number.group(0)))

    # A reply in another script: the warning beside the composer; Enter holds it, "Send anyway" sends.
    box.fill("")
    box.press_sequentially("您好，请稍等")
    warning = agent.locator("#script-warning")
    assert_seen(agent, warning.filter(has_text="Simplified Chinese"))
    assert "the customer writes English" in warning.inner_text()
    box.press("Enter")
    assert_seen(agent, warning)
    assert box.input_value() == "您好，请稍等"          # held, not sent
    anyway = agent.get_by_role("button", name="Send anyway")
    assert_seen(agent, anyway)
    anyway.click()
    assert_seen(customer, customer.locator(".hl-msg[data-sender=agent]").filter(has_text="您好，请稍等"))
    warning.wait_for(state="hidden")
    assert box.input_value() == ""
    agent.locator("#transcript .msg.agent").filter(has_text="您好，请稍等").wait_for()
    assert customer.locator(".hl-msg[data-sender=agent]").filter(has_text="您好，请稍等").count() == 1
    # Ctrl+/ opens the picker too (every reply of the customer's language); Escape closes it.
    box.press("Control+/")
    assert_seen(agent, picker.locator(f"[data-shortcut={shortcut}]"))
    box.press("Escape")
    picker.wait_for(state="hidden")

    agent.click("#resolve-btn")
    # The conversation has an open case: the console asks what becomes of it.
    dialog = agent.get_by_role("dialog", name="Resolve the conversation")
    assert_seen(agent, dialog.get_by_label("Resolve the case too"))
    dialog.get_by_label("Resolution the customer will see").fill("Refunded the double charge.")
    assert_seen(agent, dialog.locator("#resolve-confirm"))
    dialog.locator("#resolve-confirm").click()
    agent.locator("#mine-list li").first.wait_for(state="detached")
    for page in pages:
        page.context.close()


# ------------------------------------------------------------------------------ the fake hub

WEB = Path(__file__).resolve().parent.parent / "bot" / "web"
STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/widget.js": ("widget.js", "application/javascript; charset=utf-8"),
    "/console": ("console.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "application/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
    "/canned.js": ("canned.js", "application/javascript; charset=utf-8"),
}


class Conn:
    """One browser socket on the fake hub. Frames it sends are recorded as they arrive (so the
    test sees them even when the scenario is not reading) and queued for :meth:`recv`."""

    def __init__(self, fake: FakeHub, ws: Any, kind: str, n: int):
        self.fake, self.ws, self.kind, self.n = fake, ws, kind, n
        self.inbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def recv(self, timeout: float = 15) -> dict[str, Any]:
        frame = await asyncio.wait_for(self.inbox.get(), timeout)
        if frame is None:
            raise ConnectionError("the browser closed the socket")
        return frame

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def close(self, code: int, reason: str = "") -> None:
        await self.ws.close(code=code, reason=reason)

    async def gate(self, name: str, timeout: float = 20) -> None:
        """Wait until the test calls ``fake.open_gate(name)``."""
        await asyncio.get_running_loop().run_in_executor(None, self.fake.gate(name).wait, timeout)


Scenario = Callable[[Conn], Awaitable[None]]


class FakeHub:
    """Serves bot/web and scripted /ws/chat and /ws/agent sockets on one port, in a thread."""

    def __init__(self) -> None:
        self.chat: Scenario | None = None
        self.agent: Scenario | None = None
        self.frames: list[tuple[str, int, dict[str, Any]]] = []
        self.counts = {"chat": 0, "agent": 0}
        self.gates: dict[str, threading.Event] = {}
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        self.url = ""

    def gate(self, name: str) -> threading.Event:
        return self.gates.setdefault(name, threading.Event())

    def open_gate(self, name: str) -> None:
        self.gate(name).set()

    async def _http(self, path: str, headers: Any) -> Any:
        if headers.get("Upgrade", "").lower() == "websocket":
            return None
        found = STATIC.get(path.split("?", 1)[0])
        if found is None:
            return HTTPStatus.NOT_FOUND, [("Content-Type", "text/plain")], b"not found\n"
        return HTTPStatus.OK, [("Content-Type", found[1]), ("Cache-Control", "no-store")], (WEB / found[0]).read_bytes()

    async def _handler(self, ws: Any, path: str | None = None) -> None:
        kind = "agent" if ws.path.startswith("/ws/agent") else "chat"
        with self.lock:
            self.counts[kind] += 1
            n = self.counts[kind]
        conn = Conn(self, ws, kind, n)

        async def reader() -> None:
            try:
                async for raw in ws:
                    frame = json.loads(raw)
                    with self.lock:
                        self.frames.append((kind, n, frame))
                    conn.inbox.put_nowait(frame)
            except Exception:  # noqa: BLE001 - closed by either side
                pass
            conn.inbox.put_nowait(None)

        task = asyncio.ensure_future(reader())
        scenario = self.chat if kind == "chat" else self.agent
        try:
            if scenario is not None:
                await scenario(conn)
        except ConnectionError:
            pass
        await task

    def start(self) -> None:
        import websockets

        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            server = self.loop.run_until_complete(
                websockets.serve(self._handler, "127.0.0.1", 0, process_request=self._http)  # type: ignore[attr-defined]
            )
            self.server = server
            self.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert ready.wait(10), "the fake hub did not start"

    def stop(self) -> None:
        for g in self.gates.values():
            g.set()

        async def shutdown() -> None:
            self.server.close()
            await self.server.wait_closed()

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def received(self, kind: str, type_: str | None = None) -> list[tuple[int, dict[str, Any]]]:
        with self.lock:
            return [(n, f) for k, n, f in self.frames if k == kind and (type_ is None or f.get("type") == type_)]

    def wait_for(self, kind: str, pred: Callable[[int, dict[str, Any]], bool], timeout: float = 10) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for n, f in self.received(kind):
                if pred(n, f):
                    return f
            time.sleep(0.05)
        raise AssertionError(f"no matching {kind} frame; got {self.received(kind)}")


@pytest.fixture()
def fake() -> Iterator[FakeHub]:
    hub = FakeHub()
    hub.start()
    yield hub
    hub.stop()


def _iso(delta_s: float = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=delta_s)).isoformat()


class MiniChat:
    """The customer side of a hub, small: signed-looking tokens it issued are valid, anything
    else is refused with 4001; a conversation of another visitor with 4003. Stores messages
    with gap-free seqs, replays after ``last_seq``, acks, and answers with ``reply(text)``."""

    def __init__(self, reply: Callable[[str], dict[str, Any] | None] | None = None):
        self.visitors: dict[str, str] = {}        # token -> visitor
        self.convs: dict[str, dict[str, Any]] = {}  # conversation id -> {visitor, messages, by_cmid}
        self.reply = reply or (lambda text: {"sender": "bot", "text": "Echo: " + text})
        self.refuse_all = False
        self.sockets: dict[str, list[Conn]] = {}

    def new_conversation(self, visitor: str) -> str:
        cid = f"conv-{len(self.convs) + 1}"
        self.convs[cid] = {"visitor": visitor, "messages": [], "by_cmid": {}}
        return cid

    def store(self, cid: str, frame: dict[str, Any]) -> dict[str, Any]:
        conv = self.convs[cid]
        msg = {"type": "message", "seq": len(conv["messages"]) + 1, "ts": _iso(), **frame}
        conv["messages"].append(msg)
        return msg

    async def __call__(self, conn: Conn) -> None:
        hello = await conn.recv()
        assert hello["type"] == "hello"
        token, wanted = hello.get("visitor_token"), hello.get("conversation_id")
        if self.refuse_all or (token is not None and token not in self.visitors):
            await conn.send({"type": "error", "code": "unauthorized", "message": "the visitor token is not valid"})
            await conn.close(4001, "unauthorized")
            return
        visitor = self.visitors[token] if token else f"v{len(self.visitors) + 1}"
        if wanted is not None and wanted in self.convs and self.convs[wanted]["visitor"] != visitor:
            await conn.send({"type": "error", "code": "forbidden", "message": "not your conversation"})
            await conn.close(4003, "forbidden")
            return
        cid = wanted if wanted in self.convs else None
        if cid is None and token:
            cid = next((c for c, v in reversed(self.convs.items()) if v["visitor"] == visitor), None)
        cid = cid or self.new_conversation(visitor)
        new_token = f"tok-{visitor}-{conn.n}"
        self.visitors[new_token] = visitor
        self.sockets.setdefault(cid, []).append(conn)
        await conn.send({"type": "welcome", "conversation_id": cid, "visitor_token": new_token, "status": "bot",
                         "last_seq": len(self.convs[cid]["messages"])})
        for m in self.convs[cid]["messages"][hello.get("last_seq", 0):]:
            await conn.send(m)
        await conn.send({"type": "status", "status": "bot"})
        while True:
            f = await conn.recv()
            if f["type"] != "message":
                continue
            conv = self.convs[cid]
            if f["client_msg_id"] in conv["by_cmid"]:
                seq = conv["by_cmid"][f["client_msg_id"]]
                await conn.send({"type": "ack", "client_msg_id": f["client_msg_id"], "seq": seq})
                continue
            stored = self.store(cid, {"sender": "customer", "text": f["text"], "client_msg_id": f["client_msg_id"]})
            conv["by_cmid"][f["client_msg_id"]] = stored["seq"]
            await conn.send({"type": "ack", "client_msg_id": f["client_msg_id"], "seq": stored["seq"]})
            answer = self.reply(f["text"])
            if answer:
                await conn.send(self.store(cid, answer))


def _new_page(browser: Any, **kw: Any) -> Any:
    kw.setdefault("locale", "en-US")
    return browser.new_context(**kw).new_page()


def _seed_widget(page: Any, url: str, state: dict[str, Any]) -> None:
    """Put ``state`` in the widget's localStorage, then load the page with it."""
    page.goto(url + "/")
    page.evaluate("([k, v]) => localStorage.setItem(k, v)", [_store_key(url), json.dumps(state)])
    page.reload()


def _log_texts(page: Any) -> list[tuple[str | None, str, bool]]:
    """The widget log as (data-seq, text without the sender label, pending?) in DOM order."""
    return [tuple(x) for x in page.evaluate(  # type: ignore[misc]
        """() => Array.from(document.querySelectorAll('.hl-log .hl-msg')).map(n =>
             [n.getAttribute('data-seq'), n.lastChild.textContent, n.classList.contains('hl-pending')])"""
    )]


def test_fake_refused_token_gets_a_fresh_conversation_once(fake: FakeHub, browser: Any) -> None:
    """Item: 4001 after a server restart (its secret changed) and a forged stored token."""
    chat = MiniChat()
    fake.chat = chat
    page = _new_page(browser)
    _open_widget(page, fake.url)
    _say(page, "old question")
    page.locator(".hl-msg[data-sender=bot]").filter(has_text="Echo: old question").wait_for()
    first = _widget_state(page)
    # The widget's public API never hands out the bearer token; the widget keeps it in localStorage.
    assert "visitor_token" not in first
    first_token = page.evaluate("k => JSON.parse(localStorage.getItem(k)).visitor_token", _store_key(fake.url))
    # The server restarts with another secret: every token it issued before is refused.
    chat.visitors.clear()
    for conn in chat.sockets[first["conversation_id"]]:
        asyncio.run_coroutine_threadsafe(conn.close(1001, "restart"), fake.loop).result(5)
    page.wait_for_function(
        "old => { const c = window.HumanlineWidget.state().conversation_id; return c && c !== old; }",
        arg=first["conversation_id"], timeout=15_000,
    )
    hellos = [f for _, f in fake.received("chat", "hello")]
    assert hellos[1]["visitor_token"] == first_token                # resumed first, was refused (4001)
    assert "visitor_token" not in hellos[2] and "conversation_id" not in hellos[2] and hellos[2]["last_seq"] == 0
    assert page.locator(".hl-msg").filter(has_text="old question").count() == 0  # the old history is cleared
    assert page.locator(".hl-msg").filter(has_text="not valid").count() == 0     # no scary error shown
    _say(page, "new question")
    page.locator(".hl-msg[data-sender=bot]").filter(has_text="Echo: new question").wait_for()
    assert [t[:2] for t in _log_texts(page)] == [("1", "new question"), ("2", "Echo: new question")]

    # A forged token in localStorage (reload): the same, a new conversation, and chatting works.
    now = _widget_state(page)
    page.evaluate(
        """key => { const s = JSON.parse(localStorage.getItem(key)); s.visitor_token = "forged";
                    localStorage.setItem(key, JSON.stringify(s)); }""",
        _store_key(fake.url),
    )
    page.reload()
    page.wait_for_function(
        "old => { const s = window.HumanlineWidget.state(); return s.conversation_id && s.conversation_id !== old"
        " && s.visitor_token !== 'forged'; }",
        arg=now["conversation_id"], timeout=15_000,
    )
    _say(page, "after the forgery")
    page.locator(".hl-msg[data-sender=bot]").filter(has_text="Echo: after the forgery").wait_for()
    assert page.locator(".hl-msg").filter(has_text="new question").count() == 0
    page.context.close()


def test_fake_refused_twice_shows_an_error_and_stops(fake: FakeHub, browser: Any) -> None:
    chat = MiniChat()
    chat.refuse_all = True                # e.g. a bad identity signature or a forbidden origin
    fake.chat = chat
    page = _new_page(browser)
    _seed_widget(page, fake.url, {"visitor_token": "forged", "conversation_id": "conv-x", "open": True})
    page.locator(".hl-status").filter(has_text="cannot be started").wait_for(timeout=10_000)
    page.wait_for_timeout(3_000)          # a reconnect loop would have retried several times by now
    assert fake.counts["chat"] == 2
    hellos = [f for _, f in fake.received("chat", "hello")]
    assert hellos[0]["visitor_token"] == "forged" and "visitor_token" not in hellos[1]
    assert "forged" not in json.dumps(_widget_state(page))
    page.context.close()


def test_fake_replay_live_frames_and_pending_messages_keep_seq_order(fake: FakeHub, browser: Any) -> None:
    fake.gate("acks")

    async def scenario(conn: Conn) -> None:
        hello = await conn.recv()
        assert hello.get("conversation_id") == "conv-a"
        await conn.send({"type": "welcome", "conversation_id": "conv-a", "visitor_token": "tok-a2", "status": "bot",
                         "last_seq": 6})
        # A live frame sent between registering the socket and the replay: it arrives first.
        await conn.send({"type": "message", "seq": 6, "sender": "bot", "text": "six (live)", "ts": _iso()})
        replay = [(1, "customer", "one"), (2, "bot", "two"), (3, "agent", "three"),
                  (4, "customer", "stored, ack lost"), (5, "bot", "five")]
        for seq, sender, text in replay:
            frame = {"type": "message", "seq": seq, "sender": sender, "text": text, "ts": _iso()}
            if seq == 4:
                frame["client_msg_id"] = "p-0"
            if sender == "agent":
                frame["agent_name"] = "Alice Chen"
            await conn.send(frame)
        await conn.send({"type": "message", "seq": 2, "sender": "bot", "text": "two", "ts": _iso()})  # duplicate
        await conn.send({"type": "status", "status": "agent", "agent_name": "Alice Chen"})
        await conn.gate("acks")
        while True:
            f = await conn.recv()
            if f["type"] == "message":
                await conn.send({"type": "ack", "client_msg_id": f["client_msg_id"],
                                 "seq": 4 if f["client_msg_id"] == "p-0" else 7})

    fake.chat = scenario
    page = _new_page(browser)
    _seed_widget(page, fake.url, {
        "visitor_token": "tok-a", "conversation_id": "conv-a", "last_seq": 6, "open": True,
        "pending": [{"client_msg_id": "p-0", "text": "stored, ack lost"},
                    {"client_msg_id": "p-1", "text": "never stored"}],
    })
    page.locator(".hl-msg").filter(has_text="six (live)").wait_for()
    page.locator(".hl-status").filter(has_text="Alice Chen").wait_for()
    hello = fake.received("chat", "hello")[0][1]
    assert hello["last_seq"] == 0        # an empty page asks for the whole history
    # Both pending messages were sent again with their own client_msg_id.
    fake.wait_for("chat", lambda n, f: f.get("client_msg_id") == "p-1")
    assert _log_texts(page) == [
        ("1", "one", False), ("2", "two", False), ("3", "three", False), ("4", "stored, ack lost", False),
        ("5", "five", False), ("6", "six (live)", False), (None, "never stored", True),
    ]
    assert _widget_state(page)["last_seq"] == 6
    fake.open_gate("acks")
    page.locator(".hl-msg[data-seq='7']").filter(has_text="never stored").wait_for()
    texts = _log_texts(page)
    assert [t[0] for t in texts] == ["1", "2", "3", "4", "5", "6", "7"] and not any(t[2] for t in texts)
    state = _widget_state(page)
    assert state["pending"] == [] and state["last_seq"] == 7
    page.context.close()


QUEUED = {
    "type": "status", "status": "queued", "queue": "general", "queue_display": "Customer care", "position": 2,
    "eta_seconds": 240, "reason": "asked_for_human", "rule": "first come, first served within the Customer care queue",
    "agents_online": 2, "first_response_minutes": 10, "case_id": "HL-20250101-0042",
}


def test_fake_queue_status_is_visible_text_at_phone_width(fake: FakeHub, browser: Any) -> None:
    async def scenario(conn: Conn) -> None:
        await conn.recv()
        await conn.send({"type": "welcome", "conversation_id": "c1", "visitor_token": "t1", "status": "queued"})
        await conn.send(QUEUED)
        await conn.gate("nobody")
        await conn.send({**QUEUED, "position": 1, "eta_seconds": 600, "agents_online": 0})
        await conn.gate("end")

    fake.chat = scenario
    page = _new_page(browser, viewport={"width": 375, "height": 667}, is_mobile=True, has_touch=True)
    _open_widget(page, fake.url)
    status = page.locator(".hl-status")
    status.filter(has_text="Position 2").wait_for()
    text = status.inner_text()
    for part in ("Customer care queue", "Position 2", "about 4 min", "Rule: first come, first served within the "
                 "Customer care queue", "2 agents online", "answer within 10 min", "Case HL-20250101-0042"):
        assert part in text, (part, text)
    more = page.locator(".hl-status-more")
    assert more.is_visible()
    box = status.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 375
    assert status.evaluate("s => s.scrollWidth <= s.clientWidth")  # nothing cut off or scrolling sideways
    if SHOTS:
        page.screenshot(path=str(SHOTS / "widget-queue-phone.png"))
    fake.open_gate("nobody")
    status.filter(has_text="No agent online now").wait_for()
    assert "Position 1" in status.inner_text() and "answer within 10 min" in status.inner_text()
    page.context.close()


PLAN_BUTTONS = [
    {"title": "Basic", "payload": '/choose_plan{"plan":"basic"}'},
    {"title": "<b>Premium</b>", "payload": '/choose_plan{"plan":"premium"}'},
]


def test_fake_suggestion_buttons_send_their_payload(fake: FakeHub, browser: Any) -> None:
    def reply(text: str) -> dict[str, Any] | None:
        if text == "change my plan":
            return {"sender": "bot", "text": 'Which plan? <img src=x onerror="window.__pwned=1">',
                    "buttons": PLAN_BUTTONS}
        return {"sender": "bot", "text": "Noted: " + text}

    fake.chat = MiniChat(reply)
    page = _new_page(browser)
    _open_widget(page, fake.url)
    _say(page, "change my plan")
    group = page.get_by_role("group", name="Suggested replies")
    group.wait_for()
    # The status bar spans the panel (it once took the bubbles' hl-bot class and shrank to its text).
    panel, bar = page.get_by_role("dialog").bounding_box(), page.locator(".hl-status").bounding_box()
    assert panel and bar and abs(panel["width"] - bar["width"]) < 1
    basic = group.get_by_role("button", name="Basic")
    premium = group.get_by_role("button", name="<b>Premium</b>")  # markup is shown as text
    assert basic.is_enabled() and premium.is_enabled()
    assert page.locator(".hl-root b, .hl-root img").count() == 0
    assert page.evaluate("window.__pwned") is None
    # Keyboard: Tab reaches the buttons, Enter chooses.
    basic.focus()
    assert page.evaluate("document.activeElement.textContent") == "Basic"
    page.keyboard.press("Enter")
    sent = fake.wait_for("chat", lambda n, f: f.get("type") == "message" and f["text"].startswith("/"))
    assert sent["text"] == '/choose_plan{"plan":"basic"}' and sent["client_msg_id"]
    page.locator(".hl-msg[data-sender=customer]:not(.hl-pending)").filter(has_text="Basic").wait_for()
    assert basic.is_disabled() and premium.is_disabled()
    assert basic.get_attribute("aria-pressed") == "true"
    premium.click(force=True)          # a disabled row sends nothing more
    page.locator(".hl-msg[data-sender=bot]").filter(has_text="Noted: /choose_plan").wait_for()
    page.wait_for_timeout(300)
    assert len([f for _, f in fake.received("chat", "message")]) == 2
    # After a reload the replayed choice shows its title and the answered row stays disabled.
    page.reload()
    page.get_by_role("group", name="Suggested replies").wait_for()
    page.locator(".hl-msg[data-sender=bot]").filter(has_text="Noted:").wait_for()
    shown = [t[1] for t in _log_texts(page)][:3]
    assert shown == ["change my plan", 'Which plan? <img src=x onerror="window.__pwned=1">', "Basic"]
    assert page.get_by_role("button", name="Basic").is_disabled()
    page.context.close()


# ------------------------------------------------------------------------------ console, fake hub

AGENT_SESSION = {"token": "agent-token", "agent": {"id": 1, "username": "alice", "display_name": "Alice Chen",
                                                   "role": "agent", "skills": ["general"]}}
QUEUES = [{"name": "general", "display": {"en": "Customer care"}, "waiting": 1, "oldest_wait_s": 30,
           "first_response_minutes": 10, "with_agent": 1}]


def _console(browser: Any, url: str) -> Any:
    ctx = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    ctx.add_init_script(f"sessionStorage.setItem('humanline:agent', {json.dumps(json.dumps(AGENT_SESSION))})")
    page = ctx.new_page()
    page.goto(url + "/console")
    page.wait_for_selector("#app-view:not([hidden])")
    return page


def _msg(cid: str, seq: int, text: str, sender: str = "customer") -> dict[str, Any]:
    return {"type": "message", "conversation_id": cid, "seq": seq, "sender": sender, "text": text, "ts": _iso(),
            "intent": "request_human" if sender == "customer" else None, "confidence": 0.9}


def test_fake_console_ready_snapshot_replaces_the_old_state(fake: FakeHub, browser: Any) -> None:
    fake.gate("restart")

    async def scenario(conn: Conn) -> None:
        auth = await conn.recv()
        assert auth["type"] == "auth" and auth["token"] == "agent-token"
        if conn.n == 1:
            await conn.send({"type": "ready", "agent": AGENT_SESSION["agent"], "queues": QUEUES,
                             "waiting": [{"conversation_id": "w-old", "queue": "general", "reason": "asked_for_human",
                                          "case_id": None, "ts": _iso(-30)}],
                             "conversations": [{"conversation_id": "c-old", "queue": "general", "status": "agent",
                                                "transcript": [_msg("c-old", 1, "Old transcript line")],
                                                "case": None}]})
            await conn.send({**_msg("c-old", 2, "second old line"), "event_id": 100})
            await conn.gate("restart")
            await conn.close(1001, "restart")
            return
        await conn.send({"type": "ready", "agent": AGENT_SESSION["agent"], "queues": QUEUES,
                         "waiting": [{"conversation_id": "w-new", "queue": "general", "reason": "frustration",
                                      "case_id": "HL-9", "ts": _iso(-5)}],
                         "conversations": [{"conversation_id": "c-new", "queue": "general", "status": "agent",
                                            "transcript": [_msg("c-new", 1, "New transcript line")], "case": None}],
                         "last_event_id": 1})
        await conn.send({**_msg("c-new", 2, "missed while away"), "event_id": 101})   # replayed after ready
        await conn.send({**_msg("c-new", 1, "New transcript line"), "event_id": 102})  # and a duplicate
        await conn.gate("end")

    fake.agent = scenario
    page = _console(browser, fake.url)
    page.locator("[data-claim=w-old]").wait_for()
    page.locator("#mine-list li").first.click()
    page.locator("#transcript").filter(has_text="second old line").wait_for()

    fake.open_gate("restart")
    page.locator("[data-claim=w-new]").wait_for(timeout=15_000)
    auth2 = fake.received("agent", "auth")[1][1]
    assert auth2["last_event_id"] == 100
    assert page.locator("[data-claim]").count() == 1           # w-old is gone
    assert page.locator("#mine-list li").count() == 1
    assert "Old transcript line" not in page.locator("#transcript").inner_text()  # c-old was released meanwhile
    page.locator("#mine-list li").first.click()
    page.locator("#transcript").filter(has_text="missed while away").wait_for()
    texts = page.locator("#transcript .msg").all_inner_texts()
    assert len(texts) == 2 and "New transcript line" in texts[0] and "missed while away" in texts[1]
    page.context.close()


def test_fake_console_sla_countdowns_progress_and_extension(fake: FakeHub, browser: Any) -> None:
    case: dict[str, Any] = {
            "id": 1, "number": "HL-20250101-0007", "category": "billing", "queue": "general", "stage": "accepted",
            "first_response_due_at": _iso(7 * 60 + 30), "first_responded_at": None,
            "next_update_due_at": _iso(4), "resolved_at": None, "reopen_count": 0,
            "timeline": [{"kind": "created", "from_stage": None, "to_stage": "accepted", "actor": "hub",
                          "detail": None, "created_at": _iso(-60)}]}

    async def scenario(conn: Conn) -> None:
        await conn.recv()
        await conn.send({"type": "ready", "agent": AGENT_SESSION["agent"], "queues": QUEUES,
                         "waiting": [{"conversation_id": "w-late", "queue": "general", "reason": "asked_for_human",
                                      "case_id": None, "ts": _iso(-12 * 60 - 5)}],
                         "conversations": [{"conversation_id": "c-1", "queue": "general", "status": "agent",
                                            "transcript": [_msg("c-1", 1, "I was charged twice")], "case": case}]})
        event = 200
        while True:
            f = await conn.recv()
            event += 1
            if f["type"] == "case_progress":
                updated = {**case, "first_responded_at": _iso(), "next_update_due_at": _iso(24 * 3600),
                           "timeline": case["timeline"] + [{"kind": "progress", "from_stage": None, "to_stage": None,
                                                            "actor": "agent:alice", "detail": f["text"],
                                                            "created_at": _iso()}]}
                await conn.send({"type": "case", "conversation_id": "c-1", "case": updated, "event_id": event})
            elif f["type"] == "case_extend":
                await conn.send({"type": "error", "code": "invalid_case", "message": "extensions are limited to 72 h",
                                 "conversation_id": "c-1"})

    fake.agent = scenario
    page = _console(browser, fake.url)
    page.locator("[data-claim=w-late]").wait_for()
    late = page.locator("#waiting-list .sla-due")          # waiting 12 min, first response due after 10
    assert late.inner_text() == "first response overdue by 2 min"
    assert "breach" in (late.get_attribute("class") or "")
    assert late.evaluate("n => getComputedStyle(n).color") == "rgb(176, 0, 32)"

    page.locator("#mine-list li").first.click()
    first = page.locator("#sla-first-response")
    nxt = page.locator("#sla-next-update")
    first.wait_for()
    assert first.inner_text() == "due in 8 min"          # 7 min 30 s, rounded up (30 s of slack for a slow machine)
    assert re.fullmatch(r"due in [1-4] s", nxt.inner_text()), nxt.inner_text()
    # It counts down live: past the deadline it turns into "overdue by …", in red.
    page.locator("#sla-next-update .breach").filter(has_text=re.compile(r"^overdue by \d+ s$")).wait_for(timeout=8_000)
    assert page.locator("#sla-next-update .breach").evaluate("n => getComputedStyle(n).color") == "rgb(176, 0, 32)"

    # Progress update: sends case_progress, the refreshed case restarts the 24 h clock.
    page.fill("#progress-text", "Refund approved, the money is back within 3 days")
    page.click("#progress-form button[type=submit]")
    sent = fake.wait_for("agent", lambda n, f: f.get("type") == "case_progress")
    assert sent == {"type": "case_progress", "conversation_id": "c-1", "case_number": "HL-20250101-0007",
                    "text": "Refund approved, the money is back within 3 days"}
    nxt.filter(has_text="due in 24 h").wait_for()
    assert first.inner_text().startswith("answered ")
    assert "Refund approved" in page.locator("#case-panel ol").inner_text()
    assert "saved" in page.locator("#case-msg").inner_text()
    assert page.input_value("#progress-text") == ""

    # Extension: a reason is required; the server's refusal is shown, the input kept.
    page.fill("#extend-hours", "48")
    page.click("#extend-form button[type=submit]")
    page.locator("#case-msg.error").filter(has_text="reason is required").wait_for()
    page.wait_for_timeout(300)
    assert not fake.received("agent", "case_extend")
    page.fill("#extend-reason", "waiting for the bank's answer")
    page.click("#extend-form button[type=submit]")
    sent = fake.wait_for("agent", lambda n, f: f.get("type") == "case_extend")
    assert sent == {"type": "case_extend", "conversation_id": "c-1", "case_number": "HL-20250101-0007",
                    "reason": "waiting for the bank's answer", "hours": 48}
    page.locator("#case-msg.error").filter(has_text="extensions are limited to 72 h").wait_for()
    assert page.input_value("#extend-reason") == "waiting for the bank's answer"
    page.context.close()


@pytest.mark.parametrize("width", [1280, 375])
def test_fake_console_shows_a_held_handoff_and_a_supervisor_releases_it(
    fake: FakeHub, browser: Any, width: int
) -> None:
    """A handoff held as suspected automated (docs/security.md, 1b) is flagged in the waiting list,
    and a supervisor's Release button sends ``release_held``; the ordinary handoff that follows
    replaces the flagged entry."""
    supervisor = {**AGENT_SESSION, "agent": {**AGENT_SESSION["agent"], "role": "supervisor"}}

    async def scenario(conn: Conn) -> None:
        await conn.recv()
        await conn.send({"type": "ready", "agent": supervisor["agent"], "queues": QUEUES, "conversations": [],
                         "waiting": [{"conversation_id": "w-held", "queue": "general", "reason": "customer_request",
                                      "case_id": None, "ts": _iso(-20), "held": True, "source": "203.0.113.7"}]})
        while True:
            f = await conn.recv()
            if f["type"] == "release_held":
                await conn.send({"type": "held_released", "conversation_ids": [f["conversation_id"]]})
                await conn.send({"type": "handoff", "conversation_id": f["conversation_id"], "queue": "general",
                                 "reason": "customer_request", "case_id": "HL-20261203-0001", "ts": _iso(-20),
                                 "event_id": 300})

    fake.agent = scenario
    ctx = browser.new_context(locale="en-US", viewport={"width": width, "height": 900})
    ctx.add_init_script(f"sessionStorage.setItem('humanline:agent', {json.dumps(json.dumps(supervisor))})")
    page = ctx.new_page()
    page.goto(fake.url + "/console")
    page.wait_for_selector("#app-view:not([hidden])")
    flag = page.locator("#waiting-list .meta.held")
    assert_seen(page, flag)
    assert "suspected automated" in flag.inner_text() and "203.0.113.7" in flag.inner_text()
    release = page.locator("[data-release=w-held]")
    assert_seen(page, release)
    release.click()
    sent = fake.wait_for("agent", lambda n, f: f.get("type") == "release_held")
    assert sent["conversation_id"] == "w-held"
    page.locator("#waiting-list").filter(has_text="HL-20261203-0001").wait_for()
    assert page.locator("#waiting-list .meta.held").count() == 0
    assert page.locator("[data-release]").count() == 0
    assert_seen(page, page.locator("[data-claim=w-held]"))
    ctx.close()


def test_fake_console_offers_no_release_to_an_agent(fake: FakeHub, browser: Any) -> None:
    async def scenario(conn: Conn) -> None:
        await conn.recv()
        await conn.send({"type": "ready", "agent": AGENT_SESSION["agent"], "queues": QUEUES, "conversations": [],
                         "waiting": [{"conversation_id": "w-held", "queue": "general", "reason": "customer_request",
                                      "case_id": None, "ts": _iso(-20), "held": True, "source": "203.0.113.7"}]})
        await conn.gate("end")

    fake.agent = scenario
    page = _console(browser, fake.url)
    assert_seen(page, page.locator("#waiting-list .meta.held"))
    assert page.locator("[data-release]").count() == 0
    page.context.close()

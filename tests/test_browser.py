"""The widget and the agent console in a real browser: Debian's chromium driven by Playwright.

These run the whole system (hub + action server + trained model). ``make test`` installs
chromium (scripts/install-browser.sh) and trains the model first; a missing browser or model
is a failure, not a skip.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.live_system import LiveSystem, start_live_system

pytestmark = [pytest.mark.browser, pytest.mark.model, pytest.mark.slow]

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


def _agent_login(page: object, url: str) -> None:
    page.goto(url + "/console")  # type: ignore[attr-defined]
    page.fill("#login-username", AGENT[0])  # type: ignore[attr-defined]
    page.fill("#login-password", AGENT[2])  # type: ignore[attr-defined]
    page.click("#login-form button[type=submit]")  # type: ignore[attr-defined]
    page.wait_for_selector("#app-view:not([hidden])")  # type: ignore[attr-defined]


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
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        customer.screenshot(path=str(SHOTS / "widget.png"))
        agent.set_viewport_size({"width": 1280, "height": 720})
        agent.screenshot(path=str(SHOTS / "console.png"))
    customer.context.close()
    agent.context.close()


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
    page.locator(".hl-msg[data-sender=bot]").first.wait_for(timeout=30_000)
    if SHOTS:
        page.screenshot(path=str(SHOTS / "widget-phone.png"))
    ctx.close()

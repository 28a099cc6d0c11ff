"""The console's Resolve button with an open case, in a real browser (Debian's chromium via
Playwright) against the real hub, at 1280 px and at 375 px: the dialog asks what happens to the
case, is seen whole (:func:`tests.test_browser.assert_seen`: visible, in view, not covered),
works from the keyboard (focus inside, Escape cancels with nothing sent, an empty resolution is
refused in the dialog), and "Resolve the case too" resolves the chat and the case at once with the
resolution the customer sees. Takes ``resolve-dialog-<width>.png`` when ``HUMANLINE_SCREENSHOTS`` is set.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import select

from bot.store.models import Case, Conversation
from tests.test_browser import SHOTS, _console_login, _take_over, assert_seen, browser  # noqa: F401 - `browser` is a fixture

# the same module-scoped hub (a scripted brain that hands off with a complaint) as the case page's
from tests.test_browser_case import DESKTOP, PHONE, hub  # noqa: F401 - `hub` is a fixture

pytestmark = [pytest.mark.browser]


def _stage(srv: Any, number: str) -> str:
    with srv.db.session() as s:
        return str(s.execute(select(Case.stage).where(Case.number == number)).scalar_one())


def _status(srv: Any, number: str) -> str:
    with srv.db.session() as s:
        case_id = s.execute(select(Case.id).where(Case.number == number)).scalar_one()
        return str(s.execute(select(Conversation.status).where(Conversation.case_id == case_id)).scalar_one())


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_resolving_a_conversation_asks_about_its_open_case(hub: Any, browser: Any,  # noqa: F811
                                                                 viewport: dict[str, int]) -> None:
    from bot.services.agents import AgentService

    user = f"ria-{viewport['width']}"
    # Away: nobody takes the conversation at once, so the customer gets a case and the agent
    # claims it from the waiting list.
    AgentService(hub.db).set_available(hub.create_agent(user, "password-123", ("service_supervision", "general"),
                                                        "Ria Sen"), False)
    mobile = {"is_mobile": True, "has_touch": True} if viewport["width"] < 500 else {}
    agent = browser.new_context(locale="en-GB", viewport=viewport, **mobile).new_page()
    _console_login(agent, hub.url, user, "password-123")
    customer = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    customer.goto(hub.url + "/")
    customer.get_by_role("button", name="Chat with us").click()
    text = f"My parcel never came ({viewport['width']}), I want a person"
    customer.locator(".hl-input").fill(text)
    customer.locator(".hl-input").press("Enter")
    link = customer.locator(".hl-status .hl-case-link")
    link.wait_for()
    href = link.get_attribute("href") or ""
    found = re.search(r"/case/(HL-\d{8}-\d{4,})#", href)
    assert found, href
    number = found.group(1)
    _take_over(agent, text)
    agent.locator("#case-panel").filter(has_text=number).wait_for()

    dialog = agent.get_by_role("dialog", name="Resolve the conversation")
    # Escape cancels: the dialog goes, nothing was sent.
    agent.locator("#resolve-btn").click()
    assert_seen(agent, dialog.locator("#resolve-case").filter(has_text=number))
    agent.keyboard.press("Escape")
    dialog.wait_for(state="hidden")
    assert _status(hub, number) == "agent" and _stage(hub, number) == "accepted"

    # Open it again; everything in it is seen whole at this size, the focus is inside.
    agent.locator("#resolve-btn").click()
    for part in (dialog.get_by_role("heading"), dialog.get_by_label("Resolve the case too"),
                 dialog.get_by_label("Keep the case open"), dialog.get_by_label("Resolution the customer will see"),
                 dialog.get_by_role("button", name="Cancel"), dialog.locator("#resolve-confirm")):
        assert_seen(agent, part)
    assert agent.evaluate("document.activeElement.id") == "resolve-case-too"
    if SHOTS:
        agent.screenshot(path=str(SHOTS / f"resolve-dialog-{viewport['width']}.png"))

    # From the keyboard: to the text (empty), to the confirm button: refused in the dialog.
    agent.keyboard.press("Tab")
    assert agent.evaluate("document.activeElement.id") == "resolve-text"
    agent.keyboard.press("Tab")
    agent.keyboard.press("Tab")
    assert agent.evaluate("document.activeElement.id") == "resolve-confirm"
    agent.keyboard.press("Enter")
    assert_seen(agent, dialog.get_by_role("alert").filter(has_text="Write the resolution"))
    assert agent.evaluate("document.activeElement.id") == "resolve-text"
    assert _status(hub, number) == "agent"

    resolution = "We sent a replacement parcel, tracking AB123."
    agent.keyboard.type(resolution)
    agent.keyboard.press("Tab")
    agent.keyboard.press("Tab")
    agent.keyboard.press("Enter")
    dialog.wait_for(state="hidden")
    deadline = 50
    while (_status(hub, number), _stage(hub, number)) != ("closed", "resolved") and deadline:
        agent.wait_for_timeout(100)
        deadline -= 1
    assert (_status(hub, number), _stage(hub, number)) == ("closed", "resolved")

    # The customer's case page shows the resolution and lets them confirm.
    customer.goto(href)
    assert_seen(customer, customer.locator("#events li").filter(has_text=resolution))
    assert_seen(customer, customer.locator("#confirm-btn"))
    agent.context.close()
    customer.context.close()


def _customer_with_case(hub: Any, browser: Any, viewport: dict[str, int], user: str, text: str) -> tuple[Any, str]:  # noqa: F811
    """An agent ``user`` (away) logged in, holding a customer's conversation that has a case:
    (the agent's page, the case number)."""
    from bot.services.agents import AgentService

    AgentService(hub.db).set_available(hub.create_agent(user, "password-123", ("service_supervision", "general"),
                                                        "Ria Sen"), False)
    agent = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    _console_login(agent, hub.url, user, "password-123")
    customer = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    customer.goto(hub.url + "/")
    customer.get_by_role("button", name="Chat with us").click()
    customer.locator(".hl-input").fill(text)
    customer.locator(".hl-input").press("Enter")
    link = customer.locator(".hl-status .hl-case-link")
    link.wait_for()
    found = re.search(r"/case/(HL-\d{8}-\d{4,})#", link.get_attribute("href") or "")
    assert found
    customer.context.close()
    _take_over(agent, text)
    agent.locator("#case-panel").filter(has_text=found.group(1)).wait_for()
    return agent, found.group(1)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_keeping_the_case_open_resolves_only_the_chat(hub: Any, browser: Any,  # noqa: F811
                                                          viewport: dict[str, int]) -> None:
    agent, number = _customer_with_case(hub, browser, viewport, f"kim-{viewport['width']}",
                                        f"Still no refund ({viewport['width']}), a person please")
    agent.locator("#resolve-btn").click()
    dialog = agent.get_by_role("dialog", name="Resolve the conversation")
    assert_seen(agent, dialog.get_by_label("Keep the case open"))
    agent.keyboard.press("ArrowDown")  # the radio group: from "resolve too" to "keep open"
    assert dialog.get_by_label("Keep the case open").is_checked()
    assert dialog.get_by_label("Resolution the customer will see").is_hidden()  # nothing to write
    agent.keyboard.press("Tab")
    agent.keyboard.press("Tab")
    assert agent.evaluate("document.activeElement.id") == "resolve-confirm"
    assert_seen(agent, dialog.locator("#resolve-confirm"))
    agent.keyboard.press("Enter")
    dialog.wait_for(state="hidden")
    deadline = 50
    while _status(hub, number) != "closed" and deadline:
        agent.wait_for_timeout(100)
        deadline -= 1
    assert (_status(hub, number), _stage(hub, number)) == ("closed", "accepted")
    agent.context.close()


def test_seen_without_an_open_case_resolve_asks_nothing(hub: Any, browser: Any) -> None:  # noqa: F811
    user = "lou-1280"
    hub.create_agent(user, "password-123", ("service_supervision", "general"), "Lou Ma")  # available
    agent = browser.new_context(locale="en-GB", viewport=DESKTOP).new_page()
    _console_login(agent, hub.url, user, "password-123")
    customer = browser.new_context(locale="en-GB", viewport=DESKTOP).new_page()
    customer.goto(hub.url + "/")
    customer.get_by_role("button", name="Chat with us").click()
    text = "The app logs me out, a person please"
    customer.locator(".hl-input").fill(text)
    customer.locator(".hl-input").press("Enter")
    _take_over(agent, text)
    with hub.db.session() as s:
        conv = s.execute(select(Conversation).where(Conversation.status == "agent")
                         .order_by(Conversation.created_at.desc())).scalars().first()
        assert conv is not None and conv.case_id is None, "this conversation was to have no case"
        cid = conv.id
    agent.locator("#resolve-btn").click()
    agent.locator("#mine-list li").filter(has_text=cid[:8]).wait_for(state="detached")  # released
    assert agent.locator("#resolve-dialog").is_hidden()
    with hub.db.session() as s:
        closed = s.get(Conversation, cid)
        assert closed is not None and closed.status == "closed"
    agent.context.close()
    customer.context.close()

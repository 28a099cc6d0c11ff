"""The customer's case page in a real browser (Debian's chromium via Playwright), served by the real
hub with a scripted brain, at a desktop size and at a phone size: what a person sees
(:func:`tests.test_browser.assert_seen`), the confirm button working, the widget's link to the page,
and a refused link showing no case data. Takes ``case-phone.png`` when ``HUMANLINE_SCREENSHOTS`` is set.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from bot.brain import BrainTurn
from bot.store.models import Conversation, Handoff, utcnow
from tests.test_browser import SHOTS, _console_login, _take_over, assert_seen, browser  # noqa: F401 - `browser` is a fixture

pytestmark = [pytest.mark.browser]

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 375, "height": 740}


def _script(text: str, n: int) -> BrainTurn:
    from tests.hubtools import turn

    return turn("I'll get you a person.", intent="complaint_service", actions=["action_handoff"],
                slots_set={"handoff_queue": "service_supervision", "handoff_reason": "customer_request"})


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.hubtools import ScriptedBrain, running_hub

    with running_hub(tmp_path_factory.mktemp("casepage"), ScriptedBrain(_script)) as srv:
        srv.hub.links.public_url = srv.url  # the links point at this test hub
        yield srv


def _case_with_specialist(srv: Any, lang: str) -> Any:
    """An open case, taken by Mei Lin, with one SLA extension and a progress update."""
    cases = srv.hub.cases
    case = cases.open_case("service", visitor_id=f"visitor-{lang}", description="the app crashes", lang=lang)
    agent = srv.create_agent(f"mei-{lang}", display_name="Mei Lin", skills=("service_supervision",))
    with srv.db.session() as s:
        s.add(Conversation(id=f"conv-{lang}", visitor_id=f"visitor-{lang}", status="agent", agent_id=agent.id,
                           case_id=case.id))
        s.flush()
        s.add(Handoff(conversation_id=f"conv-{lang}", queue=case.queue, reason="case_opened", case_id=case.id,
                      agent_id=agent.id, assigned_at=utcnow()))
    cases.advance(case.number, "verifying", f"agent:mei-{lang}")
    reason = "等待物流公司回复" if lang == "zh-Hans" else "waiting for the courier's report"
    cases.extend_sla(case.number, reason, f"agent:mei-{lang}", hours=24)
    return case


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_the_case_page_and_confirm_the_resolution(hub: Any, browser: Any, viewport: dict[str, int]) -> None:  # noqa: F811
    phone = viewport["width"] < 500
    lang = "zh-Hans" if phone else "en"
    mobile = {"is_mobile": True, "has_touch": True} if phone else {}
    page = browser.new_context(locale="zh-CN" if phone else "en-GB", viewport=viewport, **mobile).new_page()
    case = _case_with_specialist(hub, lang)
    url = hub.hub.links.url(case.number)

    page.goto(url)
    stages = page.locator("#stages")
    assert_seen(page, page.locator("#title").filter(has_text=case.number))
    names = ["受理", "核实", "方案制定", "问题解决", "用户确认"] if phone else \
        ["Received", "Checking", "Working on a solution", "Solved", "Confirmed by you"]
    assert stages.locator("li .name").all_inner_texts() == names
    assert_seen(page, stages.locator("li.current").filter(has_text=names[1]))
    assert_seen(page, page.locator("#specialist").filter(has_text="Mei Lin"))
    assert_seen(page, page.locator("#next-update"))
    assert page.locator("#next-update").inner_text().strip()
    reason = "等待物流公司回复" if phone else "waiting for the courier's report"
    assert_seen(page, page.locator("#extensions li").filter(has_text=reason))
    assert_seen(page, page.locator("#info-btn"))
    assert page.locator("#resolved-box").is_hidden() and page.locator("#rate-box").is_hidden()
    if phone:
        page.evaluate("window.scrollTo(0, 0)")
        if SHOTS:
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "case-phone.png"))

    # The customer adds information; it appears in the history.
    page.fill("#info-text", "Order AB1234567" if not phone else "订单号 AB1234567")
    page.click("#info-btn")
    assert_seen(page, page.locator("#events li[data-kind=customer_info]").filter(has_text="AB1234567"))
    assert_seen(page, page.locator("#feedback"))

    # The specialist resolves the case: confirm is offered and works.
    hub.hub.cases.advance(case.number, "resolved", f"agent:mei-{lang}")
    page.reload()
    confirm = page.locator("#confirm-btn")
    assert_seen(page, confirm)
    assert_seen(page, page.locator("#reopen-btn"))
    assert_seen(page, page.locator("#rate-btn"))
    confirm.click()
    assert_seen(page, stages.locator("li.current").filter(has_text=names[4]))
    assert confirm.is_hidden()
    assert hub.hub.cases.get(case.number).stage == "confirmed"

    # And rates it.
    page.locator("#stars label").nth(4).click()
    page.click("#rate-btn")
    assert_seen(page, page.locator("#rated").filter(has_text="5"))
    assert hub.hub.cases.get(case.number).satisfaction == 5
    page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_the_case_page_speaks_the_customers_script_whatever_the_browser(hub: Any, browser: Any,  # noqa: F811
                                                                           viewport: dict[str, int]) -> None:
    """A customer who wrote in Simplified Chinese from a browser set to English (an SMS link opened
    on an English phone, say) gets the page in Simplified Chinese; ``?lang=`` still chooses."""
    page = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    case = hub.hub.cases.open_case("service", visitor_id=f"visitor-zh-{viewport['width']}",
                                   description="天天断线", lang="zh-Hans")
    url = hub.hub.links.url(case.number)
    page.goto(url)
    assert_seen(page, page.locator("#title").filter(has_text=f"工单 {case.number}"))
    assert page.locator("#stages li .name").all_inner_texts() == ["受理", "核实", "方案制定", "问题解决", "用户确认"]
    assert_seen(page, page.locator("#info-btn").filter(has_text="发送"))
    assert page.evaluate("document.documentElement.lang") == "zh-Hans"
    path, fragment = url.split("#")
    page.goto(f"{path}?lang=en#{fragment}")
    assert_seen(page, page.locator("#title").filter(has_text=f"Case {case.number}"))
    assert page.locator("#stages li .name").first.inner_text() == "Received"
    page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_a_refused_action_is_explained_in_the_customers_script(hub: Any, browser: Any,  # noqa: F811
                                                                   viewport: dict[str, int]) -> None:
    """The case page open in two tabs: rated in one, the other's rating is refused (409
    ``already_rated``) — told in Simplified Chinese, not in the API's English, and the page then
    shows the rating that counts."""
    context = browser.new_context(locale="zh-CN", viewport=viewport)
    case = hub.hub.cases.open_case("service", visitor_id=f"visitor-tabs-{viewport['width']}",
                                   description="天天断线", lang="zh-Hans")
    hub.hub.cases.advance(case.number, "resolved", "agent:mei")
    url = hub.hub.links.url(case.number)
    first, second = context.new_page(), context.new_page()
    for page in (first, second):
        page.goto(url)
        assert_seen(page, page.locator("#rate-btn"))
    first.locator("#stars label").nth(4).click()
    first.click("#rate-btn")
    assert_seen(first, first.locator("#rated").filter(has_text="5 分"))
    second.locator("#stars label").nth(1).click()
    second.click("#rate-btn")
    refusal = second.locator("#feedback.error")
    assert_seen(second, refusal.filter(has_text="您已经评价过本工单"))
    assert not re.search(r"[A-Za-z]{3,}", refusal.inner_text()), refusal.inner_text()
    assert_seen(second, second.locator("#rated").filter(has_text="5 分"))   # refreshed: the rating that counts
    assert second.locator("#rate-box").is_hidden()
    assert hub.hub.cases.get(case.number).satisfaction == 5
    context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_a_refused_link_shows_no_case(hub: Any, browser: Any, viewport: dict[str, int]) -> None:  # noqa: F811
    page = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    case = hub.hub.cases.open_case("service", visitor_id="visitor-x", description="secret detail", lang="en")
    good = hub.hub.links.url(case.number)
    for bad in (good.split("#")[0], good[:-3] + "AAA", good.replace(case.number, "HL-20200101-0001")):
        page.goto(bad)
        assert_seen(page, page.locator("#nf-title"))
        assert page.locator("#case").is_hidden()
        assert "secret detail" not in page.content() and "Mei" not in page.content()
    page.context.close()


def test_seen_the_widget_links_to_the_case_page(hub: Any, browser: Any) -> None:  # noqa: F811
    context = browser.new_context(locale="en-GB", viewport=PHONE, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.goto(hub.url + "/")
    page.get_by_role("button", name="Chat with us").click()
    box = page.locator(".hl-input")
    box.fill("The app keeps crashing, I want a person")
    box.press("Enter")
    link = page.locator(".hl-status .hl-case-link")
    assert_seen(page, link)
    href = link.get_attribute("href") or ""
    number = re.search(r"/case/(HL-\d{8}-\d{4,})#t=", href)
    assert number, href
    with context.expect_page() as opened:
        link.click()
    case_page = opened.value
    assert_seen(case_page, case_page.locator("#title").filter(has_text=number.group(1)))
    assert_seen(case_page, case_page.locator("#stages li.current"))
    context.close()



@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_the_agent_reads_what_the_customer_added_on_the_case_page(hub: Any, browser: Any,  # noqa: F811
                                                                       viewport: dict[str, int]) -> None:
    """The customer adds information on the case page while an agent holds the conversation: the
    agent's case panel shows it at once, whole, inside the panel (the entry names the customer by
    a 32-character visitor id, which ran past the panel's edge at 1280 px)."""
    import json
    import urllib.request

    user = f"kai-{viewport['width']}"
    from bot.services.agents import AgentService

    # Away: nobody takes the conversation at once, so the customer gets a case (and its link) and
    # the agent claims it from the waiting list.
    AgentService(hub.db).set_available(hub.create_agent(user, "password-123", ("service_supervision", "general"),
                                                        "Kai Wong"), False)
    agent = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    _console_login(agent, hub.url, user, "password-123")
    customer = browser.new_context(locale="en-GB", viewport=viewport).new_page()
    customer.goto(hub.url + "/")
    customer.get_by_role("button", name="Chat with us").click()
    text = f"The app crashes on start ({viewport['width']}), I want a person"
    customer.locator(".hl-input").fill(text)
    customer.locator(".hl-input").press("Enter")
    link = customer.locator(".hl-status .hl-case-link")
    link.wait_for()
    number = re.search(r"/case/(HL-\d{8}-\d{4,})#t=(.+)$", link.get_attribute("href") or "")
    assert number, link.get_attribute("href")
    _take_over(agent, text)

    added = "Order AB1234567; the crash started after the update of 2 December"
    request = urllib.request.Request(
        f"{hub.url}/api/case/{number.group(1)}/info", data=json.dumps({"text": added}).encode(),
        headers={"Content-Type": "application/json", "X-Case-Link": number.group(2)}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 200
    entry = agent.locator("#case-panel ol li").filter(has_text=added)
    assert_seen(agent, entry)
    panel = agent.locator("#case-panel").bounding_box()
    box = entry.bounding_box()
    assert panel is not None and box is not None
    assert box["x"] + box["width"] <= panel["x"] + panel["width"] + 0.5, (box, panel)
    assert entry.evaluate("li => li.scrollWidth <= li.clientWidth + 1"), "the entry runs past the panel's edge"
    agent.context.close()
    customer.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_only_this_hubs_case_links_are_clickable_in_the_widget(tmp_path: Any, browser: Any,  # noqa: F811
                                                                   viewport: dict[str, int]) -> None:
    """A message with this hub's case link and a look-alike on another host: the first is a link
    the customer can follow, the second stays text (an agent account, or a reply quoting a
    phishing text, cannot hand the customer a clickable "case page" elsewhere)."""
    from tests.hubtools import ScriptedBrain, running_hub, turn

    where: dict[str, str] = {}
    foreign = "https://help.example.net.evil.example/case/HL-20261203-0001#t=v1.1798915463.zT8qCJLrJT8asE8Z4uU5KA"

    def reply(text: str, n: int) -> BrainTurn:
        return turn(f"Your case: {where['ours']} (not {foreign})", intent="case_status", resolved=True)

    with running_hub(tmp_path, ScriptedBrain(reply)) as srv:
        case = srv.hub.cases.open_case("service", visitor_id="v-links", description="x", lang="en")
        srv.hub.links.public_url = srv.url
        where["ours"] = srv.hub.links.url(case.number)
        page = browser.new_context(locale="en-GB", viewport=viewport).new_page()
        page.goto(srv.url + "/")
        page.get_by_role("button", name="Chat with us").click()
        page.locator(".hl-input").fill("where is my case?")
        page.locator(".hl-input").press("Enter")
        message = page.locator(".hl-msg[data-sender=bot]").filter(has_text="Your case:")
        assert_seen(page, message)
        links = message.locator("a.hl-link")
        assert [a.get_attribute("href") for a in links.all()] == [where["ours"]]
        # A long link wraps over lines: what a person taps is a line of it, so each line's box
        # is checked (assert_seen looks at the centre of the whole box, between the lines).
        covered = links.first.evaluate(
            """a => Array.from(a.getClientRects()).map(r => {
                   const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
                   return top === a || a.contains(top); })""")
        assert covered and all(covered), covered
        assert foreign in message.inner_text()                       # shown, as text
        page.context.close()

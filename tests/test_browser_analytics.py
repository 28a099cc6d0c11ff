"""The supervisors' analytics page in Debian's chromium (fixtures and :func:`assert_seen` from
tests/test_browser.py): reached from the console's supervisor view, every chart (title, SVG,
legend, table of numbers) and the CSV link seen at 1280 px and 375 px on thirty seeded days; the
downloaded CSV matches the JSON; the empty state; an agent who is not a supervisor is refused.
With ``HUMANLINE_SCREENSHOTS`` set, the desktop run saves ``analytics.png``."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bot.services.agents import AgentService
from bot.store.db import Database
from bot.store.models import utcnow
from tests.analytics_seed import seed_month
from tests.hubtools import RunningHub, ScriptedBrain, running_hub, turn
from tests.test_browser import (  # noqa: F401 - `browser` is a fixture
    AGENT,
    DESKTOP,
    PHONE,
    SHOTS,
    SUPERVISOR,
    _console_login,
    assert_seen,
    browser,
)

pytestmark = [pytest.mark.browser]

CHARTS = {
    "chart-containment": ("Bot containment", "Bot alone (contained)"),
    "chart-reasons": ("Handoffs by reason", "Asked for a person"),
    "chart-queues": ("Handoffs by queue", "Customer care"),
    "chart-wait": ("Time to a person", "Median (p50)"),
    "chart-sla-first": ("First-response SLA", "Met"),
    "chart-sla-update": ("Progress-update SLA", "Breached"),
    "chart-satisfaction": ("Satisfaction", "Average rating"),
    "chart-load": ("Agent load", "Most held at once"),
}


def _brain() -> ScriptedBrain:
    return ScriptedBrain(lambda text, n: turn("Hello!", intent="greet", resolved=True))


def _accounts(db: Database) -> None:
    service = AgentService(db)
    alice = service.create(AGENT[0], AGENT[1], AGENT[2], ["general"])
    sue = service.create(SUPERVISOR[0], SUPERVISOR[1], SUPERVISOR[2], [], role="supervisor")
    service.set_available(alice, False)
    service.set_available(sue, False)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    """A hub on a database with thirty days of traffic written before it starts."""
    path = tmp_path_factory.mktemp("analytics")
    db = Database(f"sqlite:///{path / 'seeded.db'}")
    db.migrate()
    _accounts(db)
    seed_month(db, utcnow(), agent_names=(AGENT[0],))
    try:
        with running_hub(path, _brain(), db=db) as srv:
            yield srv
    finally:
        db.dispose()


@pytest.fixture(scope="module")
def empty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHub]:
    path = tmp_path_factory.mktemp("analytics-empty")
    with running_hub(path, _brain()) as srv:
        _accounts(srv.db)
        yield srv


def _page(browser: Any, viewport: dict[str, int]) -> Any:  # noqa: F811
    mobile = {"is_mobile": True, "has_touch": True} if viewport["width"] < 500 else {}
    return browser.new_context(locale="en-US", viewport=viewport, accept_downloads=True, **mobile).new_page()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_every_chart_and_the_csv(seeded: RunningHub, browser: Any, viewport: dict[str, int]) -> None:  # noqa: F811
    page = _page(browser, viewport)
    _console_login(page, seeded.url, SUPERVISOR[0], SUPERVISOR[2])
    page.get_by_role("button", name="Supervisor view").click()
    link = page.get_by_role("link", name="Analytics: charts of the last 30 days")
    assert_seen(page, link)
    link.click()
    page.wait_for_url("**/console/analytics")
    page.locator("#chart-load svg").wait_for()
    assert_seen(page, page.locator("#range").filter(has_text="(UTC days)"))
    assert page.locator("#empty").is_hidden() and page.locator("#need-login").is_hidden()

    for chart_id, (title, legend_entry) in CHARTS.items():
        figure = page.locator(f"#{chart_id}")
        assert_seen(page, figure)                                   # the whole chart fits and is on top
        for part in (figure.get_by_role("heading", name=title), figure.locator("svg"),
                     figure.locator(".legend").get_by_text(legend_entry, exact=True),
                     figure.locator("details summary")):
            assert_seen(page, part)
        svg = figure.locator("svg")
        assert svg.get_attribute("role") == "img"
        assert (svg.locator("desc").text_content() or "").strip(), chart_id    # the text alternative
        assert svg.locator("text.axis-label").first.text_content() == "Day (UTC)"
        assert svg.locator("rect, circle").count() > 0, chart_id     # something is drawn
        assert figure.locator("table tr").count() == 31              # header + 30 days

    agents = page.locator("#agents-period")
    assert_seen(page, agents.get_by_role("heading", name="Agents in this period"))
    assert_seen(page, agents.locator("tr").filter(has_text=AGENT[1]))

    # The numbers behind a chart are one click away, and are the JSON's.
    token = seeded.login(SUPERVISOR[0], SUPERVISOR[2])
    status, body = seeded.get("/api/analytics?days=30", {"Authorization": f"Bearer {token}"})
    assert status == 200
    report = json.loads(body)
    containment = page.locator("#chart-containment")
    containment.locator("details summary").click()
    last_row = containment.locator("table tr").last
    assert_seen(page, last_row)
    yesterday = report["series"][-2]
    row = containment.locator("table tr").nth(30 - 1)
    assert row.locator("td").first.inner_text() == yesterday["day"]
    assert row.locator("td").nth(1).inner_text() == str(yesterday["contained"])

    csv_link = page.get_by_role("link", name="Download CSV")
    assert_seen(page, csv_link)
    with page.expect_download() as info:
        csv_link.click()
    download = info.value
    assert download.suggested_filename.startswith("humanline-analytics-")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    assert [r["day"] for r in rows] == [d["day"] for d in report["series"]]
    assert [int(r["handoffs"]) for r in rows] == [d["handoffs"] for d in report["series"]]
    assert sum(int(r["handoffs"]) for r in rows) > 30                 # the seeded month is there

    # Another period: the charts and the CSV link follow it.
    from playwright.sync_api import expect

    page.get_by_label("Period").select_option("7")
    expect(page.locator("#chart-containment table tr")).to_have_count(8)   # header + 7 days
    assert page.get_by_role("link", name="Download CSV").get_attribute("href") == "/api/analytics.csv?days=7"
    assert_seen(page, page.locator("#chart-containment svg"))
    page.get_by_label("Period").select_option("30")
    expect(page.locator("#chart-containment table tr")).to_have_count(31)

    if SHOTS and viewport is DESKTOP:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.locator("#chart-containment details").evaluate("d => d.open = false")
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(SHOTS / "analytics.png"), full_page=True)
    page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_empty_state_and_refusal(empty: RunningHub, browser: Any, viewport: dict[str, int]) -> None:  # noqa: F811
    page = _page(browser, viewport)
    _console_login(page, empty.url, SUPERVISOR[0], SUPERVISOR[2])
    page.goto(empty.url + "/console/analytics")
    assert_seen(page, page.locator("#empty").get_by_role("heading", name="No data yet"))
    assert page.locator("#charts figure").count() == 0
    assert_seen(page, page.get_by_role("link", name="Download CSV"))
    page.context.close()

    stranger = _page(browser, viewport)                              # never logged in
    stranger.goto(empty.url + "/console/analytics")
    assert_seen(stranger, stranger.locator("#range").filter(has_text="Log in to the console first."))
    assert_seen(stranger, stranger.locator("#need-login").get_by_role("link", name="agent console"))
    stranger.context.close()

    agent = _page(browser, viewport)
    _console_login(agent, empty.url, AGENT[0], AGENT[2])
    agent.goto(empty.url + "/console/analytics")
    assert_seen(agent, agent.locator("#range").filter(has_text="for supervisors"))
    assert_seen(agent, agent.locator("#need-login").get_by_role("link", name="agent console"))
    assert agent.locator("#charts figure").count() == 0
    agent.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_short_waits_get_axis_labels_that_differ(seeded: RunningHub, browser: Any,  # noqa: F811
                                                      viewport: dict[str, int]) -> None:
    """A day whose customers waited seconds for a person (8.6 s = 0.14 min) is drawn on an axis whose
    labels are all different (it read 0.0, 0.1, 0.1 with one decimal for a 0.05 step). The hub's own
    report, with its time-to-a-person figures replaced on the way to the page."""
    page = _page(browser, viewport)
    _console_login(page, seeded.url, SUPERVISOR[0], SUPERVISOR[2])

    def short_waits(route: Any) -> None:
        report = route.fetch().json()
        for day in report["series"]:
            day["time_to_person_p50_s"] = day["time_to_person_p90_s"] = None
        report["series"][-1]["time_to_person_p50_s"] = 4.2
        report["series"][-1]["time_to_person_p90_s"] = 8.6
        route.fulfill(json=report)

    page.route("**/api/analytics?*", short_waits)
    page.goto(seeded.url + "/console/analytics")
    chart = page.locator("#chart-wait")
    chart.locator("svg").wait_for()
    assert_seen(page, chart)
    labels = chart.locator("svg text.tick[text-anchor=end]").all_text_contents()
    values = [float(v) for v in labels]
    assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
    assert values == sorted(values) and values[-1] >= 0.1, labels    # minutes, to 0.1 (8.6 s → 0.1)
    page.context.close()


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280x800", "375x740"])
def test_seen_an_opened_table_stays_open_when_only_the_height_changes(seeded: RunningHub, browser: Any,  # noqa: F811
                                                                      viewport: dict[str, int]) -> None:
    """A phone's address bar hides on scrolling (a "resize" of the height only): the charts are not
    rebuilt then, so the table the supervisor opened stays open; a new width still redraws them."""
    page = _page(browser, viewport)
    _console_login(page, seeded.url, SUPERVISOR[0], SUPERVISOR[2])
    page.goto(seeded.url + "/console/analytics")
    figure = page.locator("#chart-wait")
    figure.locator("svg").wait_for()
    figure.locator("details summary").click()
    assert_seen(page, figure.locator("table tr").last)
    page.evaluate("document.getElementById('chart-wait').setAttribute('data-kept', 'yes')")  # this very element
    # A redraw that does not happen cannot be awaited: look once the page's 150 ms debounce is long past.
    redrawn = "new Promise(done => setTimeout(() => done(!document.querySelector('#chart-wait[data-kept]')), 600))"
    page.set_viewport_size({"width": viewport["width"], "height": viewport["height"] - 60})
    assert page.evaluate(redrawn) is False                          # the same figure, still open
    assert page.locator("#chart-wait details").get_attribute("open") is not None
    assert_seen(page, figure.locator("table tr").last)
    page.set_viewport_size({"width": viewport["width"] - 40, "height": viewport["height"]})
    page.locator("#chart-wait[data-kept]").wait_for(state="detached")   # a new width: drawn again to fit
    assert_seen(page, page.locator("#chart-wait svg"))
    page.context.close()

"""Supervisor analytics routes (docs/analytics.md).

* ``GET /api/analytics?days=30`` — the daily figures as JSON
  (:meth:`bot.services.analytics.AnalyticsReport.as_dict`);
* ``GET /api/analytics.csv?days=30`` — the same figures as a CSV download: a header row, then
  one row per UTC day with one column per figure (handoffs per reason and per queue in columns
  ``handoffs_reason_<reason>`` / ``handoffs_queue_<queue>``);
* ``GET /console/analytics`` — the supervisors' page with the charts (``bot/web/analytics.*``).

Both API routes take the console's login token (``Authorization: Bearer <token>``): 401 without a
valid one, 403 for an agent who is not a supervisor, 400 for ``days`` outside 1–90.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, json, raw

from bot.services.analytics import AnalyticsService, check_days

#: the analytics page and its assets, served like the console's (file name under bot/web)
PAGES = {
    "/console/analytics": "analytics.html",
    "/analytics.js": "analytics.js",
    "/analytics.css": "analytics.css",
}


Supervisor = Callable[[Request], Awaitable[tuple[Any, HTTPResponse]]]


def add_analytics_routes(app: Sanic, hub: Any, supervisor: Supervisor) -> None:
    """Register the analytics API on ``app`` (the page itself is served with the static files).

    ``supervisor(request)`` is the console's check (:func:`bot.hub.app.create_app`): the
    supervisor of the request's bearer token, or ``None`` and the 401/403 answer.
    """
    service = AnalyticsService(hub.db, hub.config, cases=hub.cases)

    async def authorised(request: Request) -> tuple[int | None, HTTPResponse | None]:
        agent, refusal = await supervisor(request)
        if agent is None:
            return None, refusal
        try:
            return check_days(request.args.get("days")), None
        except ValueError as e:
            return None, json({"error": "bad_request", "message": str(e)}, status=400)

    @app.get("/api/analytics")
    async def analytics(request: Request) -> HTTPResponse:
        days, refusal = await authorised(request)
        if days is None:
            assert refusal is not None
            return refusal
        report = await hub.run(service.report, days)
        return json(report.as_dict(), headers={"Cache-Control": "no-store"})

    @app.get("/api/analytics.csv")
    async def analytics_csv(request: Request) -> HTTPResponse:
        days, refusal = await authorised(request)
        if days is None:
            assert refusal is not None
            return refusal
        report = await hub.run(service.report, days)
        name = f"humanline-analytics-{report.first_day:%Y%m%d}-{report.last_day:%Y%m%d}.csv"
        return raw(
            report.to_csv().encode("utf-8"),
            content_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
        )

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


def add_analytics_routes(app: Sanic, hub: Any) -> None:
    """Register the analytics API on ``app`` (the page itself is served with the static files)."""
    service = AnalyticsService(hub.db, hub.config, cases=hub.cases)

    async def authorised(request: Request) -> tuple[int | None, HTTPResponse | None]:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        agent = await hub.run(hub.agents.authenticate, token)
        if agent is None:
            return None, json({"error": "unauthorized", "message": "log in first"}, status=401)
        if agent.role != "supervisor":
            return None, json({"error": "forbidden", "message": "supervisors only"}, status=403)
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

"""The customer's case page: ``/case/<number>`` and its JSON API.

* ``GET /case/<number>`` — the page (``bot/web/case.html``): the same static document for every
  number, valid or not; it holds no case data. Its script reads the link token from the URL
  fragment (``#t=…``) and calls the API with it in the ``X-Case-Link`` header.
* ``GET /case-texts.js`` — the page's texts in every language, from the one text catalogue
  (:func:`bot.i18n.page_texts`), loaded by the page before its script.
* ``GET /api/case/<number>`` (``?lang=`` optional) — what the page shows
  (:meth:`~bot.services.case_page.CasePageService.view`).
* ``POST /api/case/<number>/info`` ``{"text"}``, ``/confirm`` ``{}``, ``/reopen`` ``{"reason"?}``,
  ``/rate`` ``{"score": 1-5, "comment"?}`` — the customer's actions; each answers the new view,
  and agents holding a conversation of the case get a ``case`` frame (their case panel) at once.

A missing, malformed, forged or expired link and an unknown case get the *same* answer
(404 ``{"error": "not_found", …}``), so nobody can find out which case numbers exist. Requests
are limited per link (:data:`READS_PER_MINUTE`, :data:`WRITES_PER_MINUTE`) and refused links per
client address (:data:`MISSES_PER_MINUTE`); over a limit: 429 with ``Retry-After``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from json import dumps as json_dumps
from pathlib import Path
from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, file, json, raw

from bot.hub.ratelimit import RateLimiter
from bot.hub.security import request_address
from bot.i18n import page_texts
from bot.services.case_page import CasePageService
from bot.services.cases import (
    MAX_CUSTOMER_TEXT,
    AlreadyRated,
    CaseNotFound,
    CaseStateError,
    CaseView,
    ReopenWindowClosed,
)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
HEADER = "X-Case-Link"
READS_PER_MINUTE = 60
WRITES_PER_MINUTE = 10
MISSES_PER_MINUTE = 30

#: the page's own script and stylesheet only; API calls to this origin only
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
API_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

NOT_FOUND = {"error": "not_found", "message": "This case link is not valid. Use the newest link we sent you."}


def _error(status: int, error: str, message: str, **headers: str) -> HTTPResponse:
    return json({"error": error, "message": message}, status=status, headers={**API_HEADERS, **headers})


def register(app: Sanic, hub: Any) -> None:
    """Add the case page's routes to ``app`` for ``hub`` (which must have ``links`` and ``cases``)."""
    page = CasePageService(hub.cases)
    reads = RateLimiter(READS_PER_MINUTE, 60.0)
    writes = RateLimiter(WRITES_PER_MINUTE, 60.0)
    misses = RateLimiter(MISSES_PER_MINUTE, 60.0)
    app.ctx.case_page = page

    def not_found() -> HTTPResponse:
        return json(NOT_FOUND, status=404, headers=API_HEADERS)

    async def authorised(request: Request, number: str, limiter: RateLimiter) -> HTTPResponse | None:
        """``None`` when the request carries a valid link for ``number`` and is within its limits;
        else the response to send."""
        address = request_address(request, hub.security.trusted_proxies)
        if misses.blocked(address):
            return _error(429, "rate_limited", "Too many attempts; try again later.",
                          **{"Retry-After": str(int(misses.retry_after(address)) + 1)})
        token = request.headers.get(HEADER)
        links = hub.links
        if links is None or not links.verify(number, token):
            misses.hit(address)
            return not_found()
        key = hashlib.sha256(f"{number}|{token}".encode()).hexdigest()
        if not limiter.hit(key):
            return _error(429, "rate_limited", "Too many requests for this case; try again in a minute.",
                          **{"Retry-After": str(int(limiter.retry_after(key)) + 1)})
        return None

    async def respond(number: str, lang: str | None) -> HTTPResponse:
        try:
            view = await hub.run(page.view, number, lang)
        except CaseNotFound:
            return not_found()
        return json(view, headers=API_HEADERS)

    @app.get("/case/<number>")
    async def case_html(request: Request, number: str) -> HTTPResponse:
        return await file(WEB_DIR / "case.html", headers=PAGE_HEADERS)

    # The page's texts come from the one text catalogue (bot.i18n), as a script the page loads
    # before its own (script-src 'self': no inline script); JSON is ASCII-escaped JavaScript.
    texts_js = f"window.HumanlineCaseTexts = {json_dumps(page_texts('case_page'), sort_keys=True)};\n"

    @app.get("/case-texts.js")
    async def case_texts(request: Request) -> HTTPResponse:
        return raw(texts_js.encode(), content_type="text/javascript; charset=utf-8",
                   headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    for name, mime in (("case.js", "text/javascript; charset=utf-8"), ("case.css", "text/css; charset=utf-8")):
        app.add_route(_asset(WEB_DIR / name, mime), f"/{name}", methods=["GET"],
                      name=f"case_asset_{name.replace('.', '_')}")

    @app.get("/api/case/<number>")
    async def case_view(request: Request, number: str) -> HTTPResponse:
        refused = await authorised(request, number, reads)
        if refused is not None:
            return refused
        return await respond(number, request.args.get("lang"))

    async def tell_agents(case_id: int) -> None:
        """The agents holding a conversation of the case get its new state (the console's case panel)."""
        holders = await hub.run(page.holders, case_id)
        if not holders:
            return
        details = await hub.run(hub.conversations.case_details, case_id)
        for cid, agent_id in holders:
            await hub.emit(agent_id, {"type": "case", "conversation_id": cid, "case": details})

    def action(name: str, handler: Callable[[str, dict[str, Any]], Awaitable[CaseView]]) -> None:
        async def route(request: Request, number: str) -> HTTPResponse:
            refused = await authorised(request, number, writes)
            if refused is not None:
                return refused
            try:
                body = request.json if request.body else {}
            except Exception:  # noqa: BLE001 - any unreadable body is a bad request
                body = None
            if not isinstance(body, dict):
                return _error(400, "bad_request", "The request must be a JSON object.")
            try:
                changed = await handler(number, body)
            except CaseNotFound:
                return not_found()
            except ReopenWindowClosed:
                return _error(409, "reopen_window_closed", "This case was solved too long ago to be reopened. "
                              "Please contact us in the chat and we will open a new case.")
            except AlreadyRated:
                return _error(409, "already_rated", "You have already rated this case. Thank you!")
            except CaseStateError as exc:
                return _error(409, "wrong_stage", str(exc))
            except ValueError as exc:
                return _error(400, "bad_request", str(exc))
            await tell_agents(changed.id)
            return await respond(number, request.args.get("lang"))

        app.add_route(route, f"/api/case/<number>/{name}", methods=["POST"], name=f"case_action_{name}")

    def text_field(body: dict[str, Any], key: str, *, required: bool) -> str:
        value = body.get(key, "")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ValueError(f"{key} must be text")
        value = value.strip()
        if required and not value:
            raise ValueError(f"{key} is required")
        if len(value) > MAX_CUSTOMER_TEXT:
            raise ValueError(f"{key} has at most {MAX_CUSTOMER_TEXT} characters")
        return value

    async def add_info(number: str, body: dict[str, Any]) -> CaseView:
        return await hub.run(page.add_info, number, text_field(body, "text", required=True))

    async def confirm(number: str, body: dict[str, Any]) -> CaseView:
        return await hub.run(page.confirm, number)

    async def reopen(number: str, body: dict[str, Any]) -> CaseView:
        return await hub.run(page.reopen, number, text_field(body, "reason", required=False))

    async def rate(number: str, body: dict[str, Any]) -> CaseView:
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, int) or not 1 <= score <= 5:
            raise ValueError("score must be a whole number from 1 to 5")
        return await hub.run(page.rate, number, score, text_field(body, "comment", required=False) or None)

    action("info", add_info)
    action("confirm", confirm)
    action("reopen", reopen)
    action("rate", rate)


def _asset(path: Path, mime: str) -> Any:
    async def handler(request: Request) -> HTTPResponse:
        return await file(path, mime_type=mime, headers={"Cache-Control": "no-cache",
                                                         "X-Content-Type-Options": "nosniff"})

    return handler


__all__ = ["HEADER", "NOT_FOUND", "PAGE_POLICY", "register"]

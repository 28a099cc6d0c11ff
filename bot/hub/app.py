"""The Sanic application: routes, static files and the hub's life cycle.

``create_app(settings, brain=None, db=None)`` builds one app around one :class:`~bot.hub.core.Hub`.
Routes:

* ``GET /healthz`` — 200 ``{"status":"ok"}`` only when the brain is ready and the database answers
  (503 otherwise);
* ``WS /ws/chat`` — customers (:mod:`bot.hub.customer_ws`); ``WS /ws/agent`` — agents
  (:mod:`bot.hub.agent_ws`);
* ``POST /api/agents/login`` — ``{username, password}`` → ``{token, expires_at, agent}`` or 401
  (429 while :class:`~bot.hub.ratelimit.LoginThrottle` says wait, 503 while the hashing executor
  is full);
* ``POST /api/agents/logout`` — ``Authorization: Bearer <token>``: revokes the token and closes
  the agent sockets opened with it;
* ``GET /api/supervisor/overview`` — queues, SLA breaches, satisfaction, recent audit, agents' load
  (supervisors);
* ``POST /api/supervisor/agents/<id>/capacity`` — ``{max_concurrent, allow_overflow?}``: an
  agent's limit of conversations at once (supervisors; audited);
* ``GET /api/analytics?days=30`` and ``GET /api/analytics.csv?days=30`` — daily figures for
  supervisors, and the page ``/console/analytics`` that charts them (:mod:`bot.hub.analytics`);
* ``GET /api/canned`` — every canned reply (``?lang=`` one language; any agent);
  ``POST /api/supervisor/canned``, ``PUT`` and ``DELETE /api/supervisor/canned/<id>`` — create,
  edit, delete one (supervisors; audited; :mod:`bot.hub.canned`);
* ``GET /metrics`` — Prometheus text format (:mod:`bot.hub.metrics`) with
  ``Authorization: Bearer $HUMANLINE_METRICS_TOKEN``; 404 when no token is configured, 401 without it;
* ``POST /api/supervisor/unlock`` — ``{username}``: clears that username's login throttle (supervisors);
* ``GET /case/<number>`` and ``/api/case/<number>[/info|/confirm|/reopen|/rate]`` — the customer's
  case page behind a signed link (:mod:`bot.hub.case_page`);
* ``/``, ``/widget.js``, ``/console`` and the console's assets, from ``bot/web``.

A brain with an async ``load()`` that is not ready yet is loaded in the background after the
server starts, so ``/healthz`` answers 503 until the model is in; a brain with an async
``close()`` (the :class:`~bot.brain_pool.BrainPool`) is closed when the server stops.
"""

from __future__ import annotations

import hmac
import itertools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from sanic import Sanic
from sanic.request import Request
from sanic.response import HTTPResponse, file, json, text

from bot.brain import Brain
from bot.hub import canned
from bot.hub.agent_ws import serve_agent
from bot.hub.analytics import PAGES as ANALYTICS_PAGES
from bot.hub.analytics import add_analytics_routes
from bot.hub.case_page import register as register_case_page
from bot.hub.core import Hub, HubError
from bot.hub.customer_ws import serve_customer
from bot.hub.security import request_address
from bot.settings import Settings
from bot.store.db import Database

logger = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
STATIC = {
    "/": "index.html",
    "/widget.js": "widget.js",
    "/console": "console.html",
    "/console.js": "console.js",
    "/console.css": "console.css",
    **ANALYTICS_PAGES,
    "/canned.js": "canned.js",
}
_names = itertools.count(1)


def create_app(settings: Settings, brain: Brain | None = None, db: Database | None = None, **hub_kw: Any) -> Sanic:
    """A Sanic app serving one hub. ``db`` defaults to ``Database(settings.database_url)``."""
    db = db or Database(settings.database_url)
    settings = resolve_secret(settings, db)
    hub = Hub(settings, db, brain, **hub_kw)
    app = Sanic(f"humanline_{next(_names)}")
    # The frame limit is far above the text limit so that a long message gets a `text_too_long`
    # error frame and the connection stays usable; only a frame above it is closed (1009).
    app.config.WEBSOCKET_MAX_SIZE = max(2**20, settings.max_text_chars * 4 + 4096)
    app.config.KEEP_ALIVE_TIMEOUT = 30
    app.ctx.hub = hub

    @app.listener("after_server_start")  # type: ignore[call-arg,arg-type]
    async def _start(app: Sanic, _loop: Any) -> None:
        await hub.start()
        load = getattr(hub.brain, "load", None)
        if load is not None and not await hub.brain.ready():  # type: ignore[union-attr]
            hub.spawn(_load_brain(load))

    @app.listener("before_server_stop")  # type: ignore[call-arg,arg-type]
    async def _stop(app: Sanic, _loop: Any) -> None:
        await hub.stop()
        close = getattr(hub.brain, "close", None)
        if close is not None:  # a brain pool: stop its worker processes
            await close()

    @app.get("/healthz")
    async def healthz(request: Request) -> HTTPResponse:
        ok = await hub.ready()
        return json({"status": "ok" if ok else "starting"}, status=200 if ok else 503)

    @app.post("/api/agents/login")
    async def login(request: Request) -> HTTPResponse:
        body = request.json if request.body else None
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not isinstance(
            body.get("password"), str
        ):
            return json({"error": "bad_request", "message": "username and password are required"}, status=400)
        security = hub.security
        address, username, password = request_address(request, security.trusted_proxies), body["username"][:64], \
            body["password"]
        if not security.reserve_login():
            return json({"error": "busy", "message": "Too many logins at once; try again in a moment."},
                        status=503, headers={"Retry-After": "1"})
        result = None
        try:
            # Counted (as a failure, until it succeeds) before anything slow happens: parallel
            # attempts cannot all pass the throttle while the first hash is still running.
            wait = await security.login_begin(address, username)
            if wait > 0:
                return json({"error": "rate_limited", "message": "Too many failed logins; try again later."},
                            status=429, headers={"Retry-After": str(int(wait) + 1)})
            try:
                found = await hub.run(hub.agents.credentials, username)
                ok = await security.check_password(password, found.password_hash)
                result = await hub.run(hub.agents.finish_login, username, found, password, ok)
            finally:
                await security.login_done(address, username, result is not None)
        finally:
            security.release_login()
        if result is None:
            return json({"error": "unauthorized", "message": "Wrong username or password."}, status=401)
        token, expires, agent = result
        return json({"token": token, "expires_at": expires.isoformat(), "agent": agent.to_dict()})

    @app.post("/api/supervisor/unlock")
    async def unlock(request: Request) -> HTTPResponse:
        """A supervisor clears the login throttle of a username (every hub, with Redis)."""
        supervisor, refusal = await _supervisor(request)
        if supervisor is None:
            return refusal
        body = request.json if request.body else None
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not body["username"]:
            return json({"error": "bad_request", "message": "username is required"}, status=400)
        username = body["username"][:64]
        await hub.security.login_unlock(username)
        await hub.run(hub.agents.record, supervisor, "login_unlocked", f"agent:{username}")
        return json({"status": "unlocked", "username": username})

    async def _supervisor(request: Request) -> tuple[Any, HTTPResponse]:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        agent = await hub.run(hub.agents.authenticate, token)
        if agent is None:
            return None, json({"error": "unauthorized", "message": "log in first"}, status=401)
        if agent.role != "supervisor":
            return None, json({"error": "forbidden", "message": "supervisors only"}, status=403)
        return agent, json({})

    @app.post("/api/agents/logout")
    async def logout(request: Request) -> HTTPResponse:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else None
        if not token or not await hub.logout(token):
            return json({"error": "unauthorized", "message": "not logged in"}, status=401)
        return json({"status": "logged_out"})

    @app.get("/api/supervisor/overview")
    async def overview(request: Request) -> HTTPResponse:
        supervisor, refusal = await _supervisor(request)
        if supervisor is None:
            return refusal
        return json({**await hub.run(_overview, hub), "agents": await hub.agents_load()})

    @app.post("/api/supervisor/agents/<agent_id:int>/capacity")
    async def set_capacity(request: Request, agent_id: int) -> HTTPResponse:
        agent, refusal = await _supervisor(request)
        if agent is None:
            return refusal
        body = request.json if request.body else None
        if not isinstance(body, dict) or "max_concurrent" not in body:
            return json({"error": "bad_request", "message": "max_concurrent (a number, or null) is required"},
                        status=400)
        try:
            updated = await hub.set_capacity(agent, agent_id, body["max_concurrent"], body.get("allow_overflow"))
        except HubError as e:
            return json({"error": e.code, "message": e.message}, status=404 if e.code == "not_found" else 400)
        return json({"agent": updated})

    # ---- canned replies (bot/hub/canned.py): every agent lists them, supervisors manage them ----
    @app.get("/api/canned")
    async def canned_list(request: Request) -> HTTPResponse:
        auth = request.headers.get("authorization", "")
        agent = await hub.run(hub.agents.authenticate, auth[7:] if auth.lower().startswith("bearer ") else None)
        if agent is None:
            return json({"error": "unauthorized", "message": "log in first"}, status=401)
        lang = request.args.get("lang")
        return json({"replies": await hub.run(hub.canned.replies, lang or None)})

    @app.post("/api/supervisor/canned")
    async def canned_create(request: Request) -> HTTPResponse:
        return await _canned_change(request, None, delete=False)

    @app.put("/api/supervisor/canned/<reply_id:int>")
    async def canned_update(request: Request, reply_id: int) -> HTTPResponse:
        return await _canned_change(request, reply_id, delete=False)

    @app.delete("/api/supervisor/canned/<reply_id:int>")
    async def canned_delete(request: Request, reply_id: int) -> HTTPResponse:
        return await _canned_change(request, reply_id, delete=True)

    async def _canned_change(request: Request, reply_id: int | None, *, delete: bool) -> HTTPResponse:
        supervisor, refusal = await _supervisor(request)
        if supervisor is None:
            return refusal
        body = request.json if request.body else {}
        if not isinstance(body, dict):
            return json({"error": "bad_request", "message": "a JSON object is required"}, status=400)
        try:
            if delete:
                assert reply_id is not None
                return json({"deleted": await canned.delete(hub, supervisor, reply_id)})
            reply = await canned.save(hub, supervisor, body, reply_id)
        except HubError as e:
            status = {"not_found": 404, "duplicate_shortcut": 409, "forbidden": 403}.get(e.code, 400)
            return json({"error": e.code, "message": e.message}, status=status)
        return json({"reply": reply}, status=200 if reply_id is not None else 201)

    @app.get("/metrics")
    async def metrics(request: Request) -> HTTPResponse:
        expected = settings.metrics_token
        if not expected:  # not configured: the route does not exist
            return text("not found\n", status=404)
        auth = request.headers.get("authorization", "")
        given = auth[7:] if auth.lower().startswith("bearer ") else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            return text("unauthorized\n", status=401, headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
        return text(await hub.run(_metrics, hub), content_type="text/plain; version=0.0.4; charset=utf-8")

    add_analytics_routes(app, hub, _supervisor)

    @app.websocket("/ws/chat")
    async def ws_chat(request: Request, ws: Any) -> None:
        await serve_customer(hub, request, ws)

    @app.websocket("/ws/agent")
    async def ws_agent(request: Request, ws: Any) -> None:
        await serve_agent(hub, request, ws)

    register_case_page(app, hub)

    for route, name in STATIC.items():
        path = WEB_DIR / name
        if path.exists():
            app.add_route(_static_handler(path), route, methods=["GET"], name=f"static_{name.replace('.', '_')}")

    async def _load_brain(load: Any) -> None:
        try:
            await load()
        except Exception:  # noqa: BLE001 - /healthz stays 503 and the log says why
            logger.exception("loading the model failed")

    return app


class MissingSecret(RuntimeError):
    """No signing key is configured for a database that is not the embedded SQLite demo."""


def resolve_secret(settings: Settings, db: Database) -> Settings:
    """``settings`` with a visitor-token signing key.

    A configured key (``HUMANLINE_SECRET`` or ``HUMANLINE_SECRET_FILE``) is used as it is. Without
    one, only the embedded SQLite demo generates a key and keeps it in its own database (so a copy
    of that file can forge its visitors, which for a demo is the accepted trade-off); any other
    database refuses to start, because a database backup must not be enough to impersonate a
    customer.

    :raises MissingSecret: no key and not SQLite.
    """
    if settings.secret:
        return settings
    if not db.is_sqlite:
        raise MissingSecret(
            "HUMANLINE_SECRET (or HUMANLINE_SECRET_FILE) is required outside the embedded SQLite demo: "
            "generate one with `python -m bot secret` (docs/security.md)"
        )
    logger.warning("no HUMANLINE_SECRET: using the key stored in the SQLite database (demo only)")
    return replace(settings, secret=db.stored_secret("visitor_token"), secret_source="database")


#: pages that must not be framed by another site (clickjacking) and may load only our own code
_PAGE_POLICIES = {
    # The console: our script and stylesheet only, sockets to this host only.
    "console.html": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                    "connect-src 'self' {ws}; object-src 'none'; base-uri 'none'; form-action 'self'; "
                    "frame-ancestors 'none'",
    # The analytics page: the same policy as the console (its charts are SVG drawn by our script).
    "analytics.html": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                      "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                      "frame-ancestors 'none'",
    # The demo page: the widget injects its stylesheet, so inline styles are allowed there.
    "index.html": "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                  "connect-src 'self' {ws}; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
}


def security_headers(name: str, host: str | None) -> dict[str, str]:
    """Response headers of the static file ``name`` served for ``host`` (docs/security.md)."""
    headers = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    policy = _PAGE_POLICIES.get(name)
    if policy is not None:
        host = (host or "").strip()
        ws = f"ws://{host} wss://{host}" if host and all(c not in host for c in " ;,'\"") else ""
        headers["Content-Security-Policy"] = policy.format(ws=ws).replace("'self' ;", "'self';")
        headers["X-Frame-Options"] = "DENY"
    return headers


def _static_handler(path: Path) -> Any:
    async def handler(request: Request) -> HTTPResponse:
        return await file(path, headers=security_headers(path.name, request.headers.get("host")))

    return handler


def _overview(hub: Hub) -> dict[str, Any]:
    from bot.services.audit import entries

    # The rule CaseService records breaches with (bot.services.sla), most overdue first.
    breaches = [b.to_dict() for b in hub.cases.breaches()]
    satisfaction = hub.cases.satisfaction_summary()
    with hub.db.session() as s:
        audit = [
            {"created_at": e.created_at.isoformat(), "actor": e.actor, "action": e.action, "target": e.target}
            for e in entries(s, limit=50)
        ]
    return {
        "queues": hub.queues.snapshot(),
        "breaches": breaches,
        "satisfaction": {"count": satisfaction.count, "average": satisfaction.average},
        "audit": audit,
        "agents_online": [a.to_dict() for a in hub.online.values()],
    }


def _metrics(hub: Hub) -> str:
    """The ``/metrics`` text: the hub's counters plus gauges read now (in a worker thread)."""
    breaches: dict[str, int] = {"first_response": 0, "progress_update": 0}
    for b in hub.cases.breaches():
        breaches[b.kind] = breaches.get(b.kind, 0) + 1
    queues = [(q["name"], int(q["waiting"]), int(q["with_agent"])) for q in hub.queues.snapshot()]
    return hub.metrics.render(
        queues=queues,
        sla_breaches=breaches,
        sockets={"customer": hub.customers.count(), "agent": hub.agent_sockets.count()},
        agents_online=len(hub.online),
        outbox_dropped=hub.outbox.dropped,
    )

"""The action server with authentication: ``python -m actions.server --port 5055``.

rasa_sdk's own server (``rasa run actions``) accepts any request on ``/webhook`` and trusts the
``visitor_id`` in it: anything that reaches its port could open cases or cancel a customer's plan.
This entry point serves the same rasa_sdk app (:func:`rasa_sdk.endpoint.create_app` over the
``actions`` package) and refuses every request except ``GET /health`` that does not carry
``Authorization: Bearer <HUMANLINE_ACTION_TOKEN>`` (compared in constant time) with 401. The
hub sends that header (:func:`bot.brain.action_endpoint_config`); ``python -m bot serve``
generates a token per run when none is configured and hands it to both.

It binds ``--host`` (``python -m bot serve`` passes the host of the configured endpoint,
``127.0.0.1`` by default) and refuses to start without a token.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import sys
from typing import Any

from bot.settings import Settings

logger = logging.getLogger(__name__)
OPEN_PATHS = frozenset({"/health"})


def authorized(header: str | None, token: str) -> bool:
    """Whether an ``Authorization`` header carries ``Bearer <token>``."""
    if not token or not header or not header.lower().startswith("bearer "):
        return False
    return hmac.compare_digest(header[7:].strip().encode(), token.encode())


def create_action_app(token: str, package: str = "actions") -> Any:
    """rasa_sdk's Sanic app for ``package`` behind the bearer-token check.

    :raises ValueError: an empty token.
    """
    if not token:
        raise ValueError("the action server needs HUMANLINE_ACTION_TOKEN")
    from rasa_sdk.endpoint import create_app
    from sanic.response import json

    app = create_app(package, cors_origins=None)

    @app.middleware("request")  # type: ignore[misc]
    async def _authenticate(request: Any) -> Any:
        if request.path in OPEN_PATHS or authorized(request.headers.get("authorization"), token):
            return None
        return json({"error": "unauthorized"}, status=401)

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m actions.server", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5055)
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if not settings.action_token:
        print("error: HUMANLINE_ACTION_TOKEN is not set; the action server does not run unauthenticated",
              file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_action_app(settings.action_token)
    logger.info("action server on %s:%s (bearer token required)", args.host, args.port)
    app.run(host=args.host, port=args.port, workers=1, access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

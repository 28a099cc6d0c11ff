"""Run-time settings, read once from the environment.

Every knob an operator may turn is here with its default; ``docs/operations.md`` lists them.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value




@dataclass
class Settings:
    """All settings of one hub process."""

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///humanline.db"
    model_path: str | None = None
    action_endpoint: str | None = "http://127.0.0.1:5055/webhook"
    secret: str = field(default_factory=lambda: secrets.token_hex(32))
    identity_secret: str | None = None
    allowed_origins: tuple[str, ...] = ()
    max_unresolved_turns: int = 3
    brain_timeout_s: float = 3.0
    max_text_chars: int = 4000
    rate_limit_per_10s: int = 20
    agent_reply_timeout_s: float = 300.0
    visitor_token_ttl_s: int = 30 * 24 * 3600
    agent_token_ttl_s: int = 12 * 3600
    config_path: str = str(ROOT / "config" / "humanline.yml")
    webhook_url: str | None = None
    outbox_interval_s: float = 5.0
    sla_check_interval_s: float = 60.0
    #: brain worker processes: ``None`` one per CPU, ``0`` the model in the hub's own process
    brain_workers: int | None = None
    #: region (ISO 3166 code) whose emergency number customers reporting danger are given;
    #: ``None``: the configuration's ``emergency.default_region``
    region: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``HUMANLINE_*`` and ``DATABASE_URL`` environment variables."""
        origins = _env("HUMANLINE_ALLOWED_ORIGINS", "")
        action = _env("HUMANLINE_ACTION_ENDPOINT", "http://127.0.0.1:5055/webhook")
        return cls(
            host=_env("HUMANLINE_HOST", "127.0.0.1"),
            port=int(_env("HUMANLINE_PORT", "8080")),
            database_url=_env("DATABASE_URL", "sqlite:///humanline.db"),
            model_path=os.environ.get("HUMANLINE_MODEL") or None,
            action_endpoint=None if action.lower() == "none" else action,
            # Empty: the hub generates a key once and keeps it in its database (bot.hub.app), so
            # visitor tokens survive a restart; several hubs share it through the database.
            secret=os.environ.get("HUMANLINE_SECRET") or "",
            identity_secret=os.environ.get("HUMANLINE_IDENTITY_SECRET") or None,
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            max_unresolved_turns=int(_env("HUMANLINE_MAX_UNRESOLVED_TURNS", "3")),
            brain_timeout_s=float(_env("HUMANLINE_BRAIN_TIMEOUT", "3.0")),
            max_text_chars=int(_env("HUMANLINE_MAX_TEXT", "4000")),
            rate_limit_per_10s=int(_env("HUMANLINE_RATE_LIMIT", "20")),
            agent_reply_timeout_s=float(_env("HUMANLINE_AGENT_REPLY_TIMEOUT", "300")),
            config_path=_env("HUMANLINE_CONFIG", str(ROOT / "config" / "humanline.yml")),
            webhook_url=os.environ.get("HUMANLINE_WEBHOOK_URL") or None,
            outbox_interval_s=float(_env("HUMANLINE_OUTBOX_INTERVAL", "5")),
            sla_check_interval_s=float(_env("HUMANLINE_SLA_CHECK_INTERVAL", "60")),
            brain_workers=_workers(_env("HUMANLINE_BRAIN_WORKERS", "")),
            region=os.environ.get("HUMANLINE_REGION") or None,
        )


def _workers(value: str) -> int | None:
    """``HUMANLINE_BRAIN_WORKERS``: empty or ``auto`` → ``None`` (one per CPU), else an int ≥ 0."""
    if value.strip().lower() in ("", "auto"):
        return None
    n = int(value)
    if n < 0:
        raise ValueError("HUMANLINE_BRAIN_WORKERS must be 0 (in-process), a positive number or auto")
    return n

"""Run-time settings, read once from the environment.

Every knob an operator may turn is here with its default; ``docs/operations.md`` lists them. The
hub, the action server (``actions/services.py``), the business configuration and the migrations
read the environment only through this module. (Developer tools — the model cache of
``bot.training``, ``bot.cluster``'s launcher options, the child processes' inherited environment
— pass the environment on or read their own options.)
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


DEFAULT_DATABASE_URL = "sqlite:///humanline.db"
DEFAULT_CONFIG_PATH = str(ROOT / "config" / "humanline.yml")


def _env(name: str, default: str) -> str:
    value = os.environ.get(name)
    return default if value is None or value == "" else value


def database_url() -> str:
    """``DATABASE_URL``, else the embedded SQLite file ``humanline.db``."""
    return _env("DATABASE_URL", DEFAULT_DATABASE_URL)


def account_backend() -> str | None:
    """``HUMANLINE_ACCOUNT_BACKEND`` (``package.module:Name``), else ``None``: the local table."""
    return os.environ.get("HUMANLINE_ACCOUNT_BACKEND") or None


def model_path() -> str | None:
    """``HUMANLINE_MODEL``: a model archive to load instead of the one trained for the current inputs."""
    return os.environ.get("HUMANLINE_MODEL") or None


def config_path() -> str:
    """``HUMANLINE_CONFIG``, else ``config/humanline.yml``: the business configuration."""
    return _env("HUMANLINE_CONFIG", DEFAULT_CONFIG_PATH)


@dataclass
class Settings:
    """All settings of one hub process."""

    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = DEFAULT_DATABASE_URL
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
    visitor_token_ttl_s: int = 24 * 3600
    agent_token_ttl_s: int = 12 * 3600
    config_path: str = DEFAULT_CONFIG_PATH
    webhook_url: str | None = None
    outbox_interval_s: float = 5.0
    sla_check_interval_s: float = 60.0
    #: brain worker processes: ``None`` one per CPU, ``0`` the model in the hub's own process
    brain_workers: int | None = None
    #: region (ISO 3166 code) whose emergency number customers reporting danger are given;
    #: ``None``: the configuration's ``emergency.default_region``
    region: str | None = None
    #: bearer token of ``GET /metrics``; ``None``: the route answers 404
    metrics_token: str | None = None
    #: a turn still pending after this long (crash, database outage, another hub died) is resumed
    turn_retry_after_s: float = 10.0
    #: how often the hub looks for pending turns and retries owed fail-safe handoffs
    turn_recovery_interval_s: float = 1.0
    #: how often the outbox relay looks for agent events / customer frames left unpublished
    #: (a hub died between a command's commit and their publication: bot/hub/outbox.py) …
    outbox_relay_interval_s: float = 2.0
    #: … that are older than this (the committing hub publishes its own at once)
    outbox_relay_grace_s: float = 5.0
    #: an outbox event still unpublished this long is dropped (logged, counted in /metrics): a
    #: frame that can never be built or delivered must not hold back its conversation's later
    #: ones for ever; reconnecting clients get the truth from the snapshot / ``hello`` anyway
    outbox_max_age_s: float = 600.0
    #: earlier signing keys, still accepted for visitor tokens while they rotate out
    previous_secrets: tuple[str, ...] = ()
    #: where the secret came from: ``env``, ``file``, ``database`` (embedded demo only) or ``default``
    secret_source: str = "default"
    #: accept the old, never-expiring ``hex(HMAC(identity_secret, user_id))`` identity form
    identity_legacy_hmac: bool = False
    #: create the demo supervisor on an empty database: ``auto`` (embedded SQLite only), ``yes``, ``no``
    demo_agent: str = "auto"
    #: bearer token the hub sends to the action server and the action server requires
    action_token: str | None = None
    #: addresses (or CIDR networks) of reverse proxies whose ``X-Forwarded-For`` is believed
    trusted_proxies: tuple[str, ...] = ()
    #: anonymous traffic per client address: new visitors per minute, hellos per minute, open sockets
    new_visitors_per_minute: int = 10
    hellos_per_minute: int = 60
    sockets_per_address: int = 50
    #: handoffs of anonymous visitors per client address and window that are ordinary; more are
    #: held as "suspected automated" until a supervisor releases them (bot.services.handoff_dedupe)
    handoffs_per_address: int = 5
    handoff_window_s: float = 600.0
    #: failed-login policy (bot.hub.ratelimit.LoginThrottle)
    login_attempts_per_address: int = 30
    scrypt_n: int = 2**17
    #: HMAC-SHA256 key for the ``Humanline-Signature`` header of outgoing webhooks
    webhook_secret: str | None = None
    #: log notification recipients and texts (phone numbers, messages) instead of redacting them
    log_personal_data: bool = False
    #: the address customers reach this hub at; case links (``/case/<number>``) start with it
    public_url: str = "http://127.0.0.1:8080"
    #: how long a signed case link stays valid (seconds; a fresh link goes with every notification)
    case_link_ttl_s: int = 30 * 24 * 3600
    #: ``REDIS_URL``: several hubs share frames, agent events, presence and limits through this
    #: Redis (bot.hub.bus); ``None``: one process, everything in memory
    redis_url: str | None = None
    #: ``HUMANLINE_START_ACTION_SERVER``: the hub starts the action server as its child process
    start_action_server: bool = True
    #: ``HUMANLINE_ACCOUNT_BACKEND``: the plan changes' system of record (``package.module:Name``),
    #: read by the action server; ``None``: the local ``plan_changes`` table
    account_backend: str | None = None

    @classmethod
    def from_env(cls) -> Settings:
        """Settings from ``HUMANLINE_*`` and ``DATABASE_URL`` environment variables."""
        origins = _env("HUMANLINE_ALLOWED_ORIGINS", "")
        secret, source = _secret()
        proxies = _env("HUMANLINE_TRUSTED_PROXIES", "")
        action = _env("HUMANLINE_ACTION_ENDPOINT", "http://127.0.0.1:5055/webhook")
        return cls(
            host=_env("HUMANLINE_HOST", "127.0.0.1"),
            port=int(_env("HUMANLINE_PORT", "8080")),
            database_url=database_url(),
            model_path=model_path(),
            action_endpoint=None if action.lower() == "none" else action,
            # Empty: only the embedded SQLite demo may generate a key and keep it in its database
            # (bot.hub.app); anything else refuses to start without HUMANLINE_SECRET(_FILE).
            secret=secret,
            secret_source=source,
            previous_secrets=tuple(s.strip() for s in _env("HUMANLINE_SECRET_PREVIOUS", "").split(",") if s.strip()),
            identity_secret=os.environ.get("HUMANLINE_IDENTITY_SECRET") or None,
            allowed_origins=tuple(o.strip() for o in origins.split(",") if o.strip()),
            max_unresolved_turns=int(_env("HUMANLINE_MAX_UNRESOLVED_TURNS", "3")),
            brain_timeout_s=float(_env("HUMANLINE_BRAIN_TIMEOUT", "3.0")),
            max_text_chars=int(_env("HUMANLINE_MAX_TEXT", "4000")),
            rate_limit_per_10s=int(_env("HUMANLINE_RATE_LIMIT", "20")),
            agent_reply_timeout_s=float(_env("HUMANLINE_AGENT_REPLY_TIMEOUT", "300")),
            config_path=config_path(),
            webhook_url=os.environ.get("HUMANLINE_WEBHOOK_URL") or None,
            outbox_interval_s=float(_env("HUMANLINE_OUTBOX_INTERVAL", "5")),
            sla_check_interval_s=float(_env("HUMANLINE_SLA_CHECK_INTERVAL", "60")),
            brain_workers=_workers(_env("HUMANLINE_BRAIN_WORKERS", "")),
            region=os.environ.get("HUMANLINE_REGION") or None,
            metrics_token=os.environ.get("HUMANLINE_METRICS_TOKEN") or None,
            turn_retry_after_s=float(_env("HUMANLINE_TURN_RETRY_AFTER", "10")),
            turn_recovery_interval_s=float(_env("HUMANLINE_TURN_RECOVERY_INTERVAL", "1")),
            outbox_relay_interval_s=float(_env("HUMANLINE_OUTBOX_RELAY_INTERVAL", "2")),
            outbox_relay_grace_s=float(_env("HUMANLINE_OUTBOX_RELAY_GRACE", "5")),
            outbox_max_age_s=float(_env("HUMANLINE_OUTBOX_MAX_AGE", "600")),
            identity_legacy_hmac=_flag(_env("HUMANLINE_IDENTITY_LEGACY_HMAC", "0")),
            visitor_token_ttl_s=int(_env("HUMANLINE_VISITOR_TOKEN_TTL", str(24 * 3600))),
            demo_agent=_choice("HUMANLINE_DEMO_AGENT", ("auto", "yes", "no")),
            action_token=os.environ.get("HUMANLINE_ACTION_TOKEN") or None,
            trusted_proxies=tuple(p.strip() for p in proxies.split(",") if p.strip()),
            new_visitors_per_minute=int(_env("HUMANLINE_NEW_VISITORS_PER_MINUTE", "10")),
            hellos_per_minute=int(_env("HUMANLINE_HELLOS_PER_MINUTE", "60")),
            sockets_per_address=int(_env("HUMANLINE_SOCKETS_PER_ADDRESS", "50")),
            handoffs_per_address=int(_env("HUMANLINE_HANDOFFS_PER_ADDRESS", "5")),
            handoff_window_s=float(_env("HUMANLINE_HANDOFF_WINDOW", "600")),
            login_attempts_per_address=int(_env("HUMANLINE_LOGIN_ATTEMPTS_PER_ADDRESS", "30")),
            scrypt_n=scrypt_cost(),
            webhook_secret=os.environ.get("HUMANLINE_WEBHOOK_SECRET") or None,
            log_personal_data=_flag(_env("HUMANLINE_LOG_PERSONAL_DATA", "0")),
            public_url=_public_url(),
            case_link_ttl_s=int(_env("HUMANLINE_CASE_LINK_TTL", str(30 * 24 * 3600))),
            redis_url=os.environ.get("REDIS_URL") or None,
            start_action_server=_env("HUMANLINE_START_ACTION_SERVER", "1") != "0",
            account_backend=account_backend(),
        )


def _public_url() -> str:
    """``HUMANLINE_PUBLIC_URL``, else ``http://<HUMANLINE_HOST>:<HUMANLINE_PORT>`` (``127.0.0.1`` for a
    wildcard host): where customers reach the hub; case-page links start with it."""
    value = _env("HUMANLINE_PUBLIC_URL", "").strip().rstrip("/")
    if value:
        if not value.startswith(("http://", "https://")):
            raise ValueError("HUMANLINE_PUBLIC_URL must start with http:// or https://")
        return value
    host = _env("HUMANLINE_HOST", "127.0.0.1")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{int(_env('HUMANLINE_PORT', '8080'))}"


def _flag(value: str) -> bool:
    return value.strip().lower() in ("1", "yes", "true", "on")


def _choice(name: str, allowed: tuple[str, ...]) -> str:
    value = _env(name, allowed[0]).strip().lower()
    value = {"1": "yes", "true": "yes", "0": "no", "false": "no"}.get(value, value)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}")
    return value


def _secret() -> tuple[str, str]:
    """The visitor-token signing key and where it came from: ``HUMANLINE_SECRET``, else the
    first line of the file ``HUMANLINE_SECRET_FILE``, else empty (``default``)."""
    value = os.environ.get("HUMANLINE_SECRET") or ""
    if value:
        return value, "env"
    path = os.environ.get("HUMANLINE_SECRET_FILE") or ""
    if path:
        text = Path(path).read_text(encoding="utf-8").strip()
        if len(text) < 32:
            raise ValueError("HUMANLINE_SECRET_FILE must hold a key of at least 32 characters")
        return text.splitlines()[0].strip(), "file"
    return "", "default"


def scrypt_cost() -> int:
    """scrypt's CPU/memory cost ``N`` for new password hashes (``HUMANLINE_SCRYPT_N``, default
    2**17 as OWASP recommends; a power of two of at least 2**14)."""
    n = int(_env("HUMANLINE_SCRYPT_N", str(2**17)))
    if n < 2**14 or n & (n - 1):
        raise ValueError("HUMANLINE_SCRYPT_N must be a power of two of at least 16384")
    return n


def _workers(value: str) -> int | None:
    """``HUMANLINE_BRAIN_WORKERS``: empty or ``auto`` → ``None`` (one per CPU), else an int ≥ 0."""
    if value.strip().lower() in ("", "auto"):
        return None
    n = int(value)
    if n < 0:
        raise ValueError("HUMANLINE_BRAIN_WORKERS must be 0 (in-process), a positive number or auto")
    return n

"""Agents: accounts, password hashes, login tokens, availability, and the audit of their actions.

Passwords are hashed with scrypt (``n=2**14, r=8, p=1``, a 16-byte random salt per user) and
compared in constant time. Login tokens are 32 random bytes; only their SHA-256 is stored, with
an expiry, so a copy of the database does not let anyone log in.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bot.services.audit import record
from bot.store.db import Database
from bot.store.models import Agent, AgentToken, Conversation, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
ROLES = ("agent", "supervisor")


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` for ``password``."""
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant-time compare)."""
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A fixed hash to verify against when the username is unknown, so that the response time does
# not tell which usernames exist.
_DUMMY_HASH = hash_password("not a password", salt=b"\0" * 16)


@dataclass(frozen=True)
class AgentInfo:
    """An agent as the hub and the console see it (never the password hash)."""

    id: int
    username: str
    display_name: str
    role: str
    skills: tuple[str, ...]
    available: bool
    #: the agent's own limit of conversations held at once (``None``: the configured default)
    max_concurrent: int | None = None
    #: a supervisor lets this agent claim by hand above the limit
    allow_overflow: bool = False

    def capacity(self, default: int) -> int:
        """How many conversations this agent may hold at once."""
        return self.max_concurrent if self.max_concurrent is not None else default

    @property
    def actor(self) -> str:
        """How the audit log names this agent."""
        return f"agent:{self.username}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "username": self.username,
            "display_name": self.display_name,
            "role": self.role,
            "skills": list(self.skills),
            "available": self.available,
            "max_concurrent": self.max_concurrent,
            "allow_overflow": self.allow_overflow,
        }


def _info(a: Agent) -> AgentInfo:
    return AgentInfo(
        id=a.id,
        username=a.username,
        display_name=a.display_name,
        role=a.role,
        skills=tuple(a.skills or ()),
        available=bool(a.available),
        max_concurrent=a.max_concurrent,
        allow_overflow=bool(a.allow_overflow),
    )


def audit(session: Session, actor: str, action: str, target: str | None, detail: dict[str, Any] | None) -> None:
    """Write one audit entry in ``session`` (committed with the caller's transaction)."""
    record(session, actor, action, target, detail)


class AgentService:
    """Agent accounts and sessions over one :class:`Database`."""

    def __init__(self, db: Database, token_ttl_s: int = 12 * 3600):
        self.db = db
        self.token_ttl_s = token_ttl_s

    def create(
        self,
        username: str,
        display_name: str,
        password: str,
        skills: list[str] | tuple[str, ...],
        role: str = "agent",
    ) -> AgentInfo:
        """A new agent account.

        :raises ValueError: bad role, empty username or a password shorter than 8 characters.
        :raises sqlalchemy.exc.IntegrityError: the username is taken.
        """
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}")
        if not username.strip():
            raise ValueError("username must not be empty")
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        with self.db.session() as s:
            a = Agent(
                username=username.strip(),
                display_name=display_name.strip() or username,
                password_hash=hash_password(password),
                role=role,
                skills=list(skills),
                available=True,
                created_at=utcnow(),
            )
            s.add(a)
            s.flush()
            audit(s, "cli", "agent_created", f"agent:{a.username}", {"skills": list(skills), "role": role})
            return _info(a)

    def count(self) -> int:
        with self.db.session() as s:
            return int(s.execute(select(func.count(Agent.id))).scalar_one())

    def get(self, agent_id: int) -> AgentInfo | None:
        with self.db.session() as s:
            a = s.get(Agent, agent_id)
            return _info(a) if a else None

    def all(self) -> list[AgentInfo]:
        with self.db.session() as s:
            return [_info(a) for a in s.execute(select(Agent).order_by(Agent.id)).scalars()]

    def login(self, username: str, password: str) -> tuple[str, datetime, AgentInfo] | None:
        """A new token for valid credentials; ``None`` otherwise (same work either way)."""
        with self.db.session() as s:
            a = s.execute(select(Agent).where(Agent.username == username)).scalar_one_or_none()
            ok = verify_password(password, a.password_hash if a else _DUMMY_HASH)
            if a is None or not ok:
                audit(s, f"agent:{username[:64]}", "login_failed", None, None)
                return None
            token = secrets.token_urlsafe(32)
            now = utcnow()
            expires = now + timedelta(seconds=self.token_ttl_s)
            s.execute(delete(AgentToken).where(AgentToken.agent_id == a.id, AgentToken.expires_at < now))
            s.add(AgentToken(token_hash=_token_hash(token), agent_id=a.id, expires_at=expires))
            audit(s, f"agent:{a.username}", "login", None, None)
            return token, expires, _info(a)

    def authenticate(self, token: object) -> AgentInfo | None:
        """The agent of a valid, unexpired token."""
        found = self.session_of(token)
        return found[0] if found else None

    def session_of(self, token: object) -> tuple[AgentInfo, datetime] | None:
        """The agent of a valid, unexpired token and when the token expires."""
        if not isinstance(token, str) or not token or len(token) > 256:
            return None
        with self.db.session() as s:
            row = s.get(AgentToken, _token_hash(token))
            if row is None or row.expires_at <= utcnow():
                return None
            a = s.get(Agent, row.agent_id)
            return (_info(a), row.expires_at) if a else None

    def logout(self, token: object) -> AgentInfo | None:
        """Revoke a token; the agent it belonged to, or ``None`` for an unknown token."""
        if not isinstance(token, str) or not token or len(token) > 256:
            return None
        with self.db.session() as s:
            row = s.get(AgentToken, _token_hash(token))
            if row is None:
                return None
            a = s.get(Agent, row.agent_id)
            s.delete(row)
            if a is not None:
                audit(s, f"agent:{a.username}", "logout", None, None)
            return _info(a) if a else None

    def set_available(self, agent: AgentInfo, available: bool) -> AgentInfo:
        with self.db.session() as s:
            s.execute(update(Agent).where(Agent.id == agent.id).values(available=available))
            audit(s, agent.actor, "availability", None, {"available": available})
            return _info(s.get(Agent, agent.id))

    def load(self, agent_id: int) -> int:
        """How many conversations the agent holds now."""
        with self.db.session() as s:
            return int(
                s.execute(
                    select(func.count(Conversation.id)).where(
                        Conversation.agent_id == agent_id, Conversation.status == "agent"
                    )
                ).scalar_one()
            )

    def loads(self, agent_ids: list[int] | None = None) -> dict[int, int]:
        """Conversations held now per agent (``agent_ids``, or every agent holding one), in one query."""
        with self.db.session() as s:
            q = (
                select(Conversation.agent_id, func.count(Conversation.id))
                .where(Conversation.status == "agent", Conversation.agent_id.is_not(None))
                .group_by(Conversation.agent_id)
            )
            if agent_ids is not None:
                q = q.where(Conversation.agent_id.in_(agent_ids))
            counts = {int(agent_id): int(n) for agent_id, n in s.execute(q)}
        return {a: counts.get(a, 0) for a in agent_ids} if agent_ids is not None else counts

    def set_capacity(
        self, agent_id: int, actor: str, *, max_concurrent: int | None, allow_overflow: bool | None = None
    ) -> AgentInfo | None:
        """Set an agent's limit of conversations held at once (``None``: back to the configured
        default) and, when given, whether it may claim by hand above it. Audited as
        ``agent_capacity`` by ``actor``; ``None`` for an unknown agent.

        :raises ValueError: a limit below 1.
        """
        if max_concurrent is not None and max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1 (or null for the default)")
        with self.db.session() as s:
            a = s.get(Agent, agent_id)
            if a is None:
                return None
            a.max_concurrent = max_concurrent
            if allow_overflow is not None:
                a.allow_overflow = allow_overflow
            s.flush()
            audit(s, actor, "agent_capacity", f"agent:{a.username}",
                  {"max_concurrent": max_concurrent, "allow_overflow": bool(a.allow_overflow)})
            return _info(a)

    def record(self, agent: AgentInfo | str, action: str, target: str | None = None, **detail: Any) -> None:
        """Audit an agent action (promise 8)."""
        actor = agent.actor if isinstance(agent, AgentInfo) else agent
        with self.db.session() as s:
            audit(s, actor, action, target, detail or None)

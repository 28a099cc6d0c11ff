"""Agents: accounts, password hashes, login tokens, availability, and the audit of their actions.

Passwords are hashed with scrypt (``n=2**17, r=8, p=1`` by default, OWASP's recommendation,
``HUMANLINE_SCRYPT_N``; a 16-byte random salt per user) and compared in constant time; a hash
made with a lower cost is replaced by one at the current cost on the next successful login.
Hashing is CPU- and memory-heavy (about 0.45 s and 128 MiB at the default): the hub runs it on a
small dedicated executor, after :class:`bot.hub.ratelimit.LoginThrottle` allowed the attempt —
hence the split into :meth:`AgentService.credentials`, :func:`verify_password` and
:meth:`AgentService.finish_login`.

Login tokens are 32 random bytes; only their SHA-256 is stored, with an expiry, so a copy of the
database does not let anyone log in. A disabled agent (``disabled_at``) cannot log in and its
tokens are revoked. Failed logins are audited without the username that was typed (it is often
a password typed into the wrong box) unless it names an existing agent.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from bot.services.audit import record
from bot.settings import scrypt_cost
from bot.store.db import Database
from bot.store.models import Agent, AgentToken, Conversation, utcnow

SCRYPT_N, SCRYPT_R, SCRYPT_P = scrypt_cost(), 8, 1
#: refuse stored hashes that would need more memory than this (a tampered row must not exhaust RAM)
SCRYPT_MAX_N = 2**20
ROLES = ("agent", "supervisor")
MAX_PASSWORD_CHARS = 1024


def _maxmem(n: int, r: int, p: int) -> int:
    return 128 * r * (n + p + 2) + 2**20


def hash_password(password: str, *, salt: bytes | None = None, n: int | None = None) -> str:
    """``scrypt$n$r$p$<salt hex>$<hash hex>`` for ``password`` (``n`` defaults to :data:`SCRYPT_N`)."""
    n = n or SCRYPT_N
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32, maxmem=_maxmem(n, SCRYPT_R, SCRYPT_P)
    )
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` result (constant-time compare)."""
    if len(password) > MAX_PASSWORD_CHARS:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or int(n) > SCRYPT_MAX_N or int(p) > 4 or int(r) > 32:
            return False
        got = hashlib.scrypt(
            password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=len(digest) // 2,
            maxmem=_maxmem(int(n), int(r), int(p)),
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def needs_rehash(stored: str) -> bool:
    """Whether a stored hash was made with less than the current cost."""
    try:
        scheme, n, r, _p, _salt, _digest = stored.split("$")
        return scheme != "scrypt" or int(n) < SCRYPT_N or int(r) < SCRYPT_R
    except ValueError:
        return True


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


# A fixed hash to verify against when the username is unknown (or disabled), so that the response
# time does not tell which usernames exist. Computed on first use: importing must stay cheap.
_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    global _dummy_hash
    with _dummy_lock:  # once, even when a burst of unknown names arrives together
        if _dummy_hash is None:
            _dummy_hash = hash_password("not a password", salt=b"\0" * 16)
        return _dummy_hash


@dataclass(frozen=True)
class Credentials:
    """What a login attempt is checked against: the stored hash, or a dummy for unknown names."""

    agent_id: int | None
    password_hash: str


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


def _usable(a: Agent | None) -> bool:
    return a is not None and a.disabled_at is None


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
        """A new token for valid credentials; ``None`` otherwise (same work either way).

        All in the calling thread; the hub calls the three steps separately so that the hash
        runs on its own executor.
        """
        found = self.credentials(username)
        return self.finish_login(username, found, password, verify_password(password, found.password_hash))

    def credentials(self, username: str) -> Credentials:
        """The stored hash of an enabled agent ``username``, or a dummy hash (never ``None``)."""
        with self.db.session() as s:
            a = s.execute(select(Agent).where(Agent.username == username)).scalar_one_or_none()
            found = Credentials(a.id, a.password_hash) if a is not None and _usable(a) else None
        # The dummy hash is computed (once) outside the session: never hash while holding the database.
        return found or Credentials(None, dummy_hash())

    def finish_login(
        self, username: str, found: Credentials, password: str, ok: bool
    ) -> tuple[str, datetime, AgentInfo] | None:
        """Issue a token after a successful check (and upgrade an old hash), or audit the failure.

        The audit names the agent only when ``username`` is an existing account: whatever else was
        typed is not kept (``detail.known = false``).
        """
        with self.db.session() as s:
            a = s.get(Agent, found.agent_id) if found.agent_id is not None else None
            if not ok or not _usable(a):
                known = found.agent_id is not None
                actor = f"agent:{username[:64]}" if known else "agent:?"
                audit(s, actor, "login_failed", None, {"known": known})
                return None
            assert a is not None
            if needs_rehash(a.password_hash):
                a.password_hash = hash_password(password)
            token = secrets.token_urlsafe(32)
            now = utcnow()
            expires = now + timedelta(seconds=self.token_ttl_s)
            s.execute(delete(AgentToken).where(AgentToken.agent_id == a.id, AgentToken.expires_at < now))
            s.add(AgentToken(token_hash=_token_hash(token), agent_id=a.id, expires_at=expires))
            audit(s, f"agent:{a.username}", "login", None, None)
            return token, expires, _info(a)

    # ---- account administration (CLI and supervisors) ------------------------------------------

    def _by_name(self, s: Session, username: str) -> Agent:
        a = s.execute(select(Agent).where(Agent.username == username)).scalar_one_or_none()
        if a is None:
            raise ValueError(f"no agent named {username!r}")
        return a

    def set_disabled(self, username: str, disabled: bool, actor: str = "cli") -> AgentInfo:
        """Disable (and log out everywhere) or re-enable an agent.

        :raises ValueError: no such agent.
        """
        with self.db.session() as s:
            a = self._by_name(s, username)
            a.disabled_at = utcnow() if disabled else None
            if disabled:
                a.available = False
                s.execute(delete(AgentToken).where(AgentToken.agent_id == a.id))
            audit(s, actor, "agent_disabled" if disabled else "agent_enabled", f"agent:{a.username}", None)
            return _info(a)

    def reset_password(self, username: str, password: str, actor: str = "cli") -> AgentInfo:
        """Set a new password and revoke every token of the agent.

        :raises ValueError: no such agent, or a password shorter than 8 characters.
        """
        if len(password) < 8:
            raise ValueError("password must have at least 8 characters")
        with self.db.session() as s:
            a = self._by_name(s, username)
            a.password_hash = hash_password(password)
            s.execute(delete(AgentToken).where(AgentToken.agent_id == a.id))
            audit(s, actor, "password_reset", f"agent:{a.username}", None)
            return _info(a)

    def revoke_tokens(self, username: str | None = None, actor: str = "cli") -> int:
        """Revoke every login token of ``username`` (``None``: of every agent); how many."""
        with self.db.session() as s:
            stmt = delete(AgentToken)
            if username is not None:
                stmt = stmt.where(AgentToken.agent_id == self._by_name(s, username).id)
            count = int(s.execute(stmt).rowcount or 0)
            audit(s, actor, "tokens_revoked", f"agent:{username}" if username else "agents:all", {"count": count})
            return count

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
            return (_info(a), row.expires_at) if a is not None and _usable(a) else None

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

    def record(
        self, agent: AgentInfo | str, action: str, target: str | None = None, *, session: Session | None = None,
        **detail: Any,
    ) -> None:
        """Audit an agent action (promise 8): in ``session``, the transaction of the change it
        describes (committed or rolled back with it), else in a transaction of its own."""
        actor = agent.actor if isinstance(agent, AgentInfo) else agent
        if session is not None:
            audit(session, actor, action, target, detail or None)
            return
        with self.db.session() as s:
            audit(s, actor, action, target, detail or None)

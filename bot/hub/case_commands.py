"""Case commands: an agent's changes to a case (issue #15's split of :class:`bot.hub.core.Hub`).

Stage changes, internal notes, progress updates for the customer and SLA extensions, and their
authorisation: a supervisor, an agent holding a conversation of the case, or an agent serving the
case's queue may work on it; anyone else gets the same answer as for a case that does not exist.
The rules themselves are :class:`bot.services.cases.CaseService`'s. Each command is one unit of
work: the change, its case event and outbox notification (the case service's), the agent's
audit entry and the case panel's refresh (in the hub's outbox, :mod:`bot.hub.outbox`) commit in
one transaction; the refresh is published after the commit. Moved here from ``core.py``;
:class:`CaseCommandsMixin` is a base of ``Hub``, whose state it uses (declared below).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from bot.hub.errors import HubError
from bot.hub.outbox import EventOutbox, Unit
from bot.services.agents import AgentInfo, AgentService
from bot.services.cases import CaseError, CaseService
from bot.services.conversations import ConversationService
from bot.services.hub_outbox import OutboxEvent


class CaseCommandsMixin:
    # The hub's state and the transitions this part uses (bot.hub.core.Hub).
    agents: AgentService
    cases: CaseService
    conversations: ConversationService
    outbox: EventOutbox
    run: Any

    async def _case_for(self, agent: AgentInfo, number: str) -> Any:
        """The case ``number`` if ``agent`` may work on it: a supervisor, the agent holding a
        conversation of the case, or an agent serving the case's queue."""
        # One answer for "no such case" and "not yours": case numbers are sequential, so a
        # different error would let an agent map every other queue's cases by probing.
        refusal = HubError("invalid_case", f"no case {number!r} that you may work on")
        case = await self.run(self.cases.get, number)
        if case is None:
            raise refusal
        if agent.role == "supervisor" or case.queue in agent.skills:
            return case
        held = await self.run(self.conversations.by_agent, agent.id)
        if any(c.case_id == case.id for c in held):
            return case
        raise refusal

    async def _case_action(
        self, agent: AgentInfo, number: str, action: str, cid: Any, fn: Callable[..., Any], *args: Any,
        **audit: Any,
    ) -> None:
        """Run a case-service change for an agent: authorised; the change (with its case event and
        its outbox notification), the agent's audit entry and the case panel's refresh in one
        transaction, so all or none are stored; the refresh published after the commit."""
        case = await self._case_for(agent, number)

        def work(session: Session) -> list[OutboxEvent]:
            fn(case.number, *args, session=session)
            self.agents.record(agent, action, case.number, session=session, **audit)
            u = Unit(session)
            if isinstance(cid, str):  # the panel of the conversation the agent works in: built when published
                u.to_agents([agent.id], {"type": "case", "conversation_id": cid, "case_id": case.id, "_view": True})
            return u.events

        try:
            events = await self.run(self.cases.run_atomic, work)
        except (CaseError, ValueError) as e:
            raise HubError("invalid_case", str(e)) from e
        await self.outbox.publish(events)

    async def case_stage(self, agent: AgentInfo, number: str, stage: str, cid: Any = None) -> None:
        """Move a case to ``stage`` (the case service checks the lifecycle)."""
        await self._case_action(agent, number, "case_stage", cid, self.cases.advance, stage, agent.actor,
                                stage=stage)

    async def case_note(self, agent: AgentInfo, number: str, text: str, cid: Any = None) -> None:
        """An internal note on the case's timeline (never shown to the customer)."""
        await self._case_action(agent, number, "case_note", cid, self.cases.add_note, agent.actor, text)

    async def case_progress(self, agent: AgentInfo, number: str, text: str, cid: Any = None) -> None:
        """A progress update for the customer: notified, and the 24 h update clock restarts."""
        await self._case_action(agent, number, "case_progress", cid, self.cases.record_progress_update,
                                agent.actor, text)

    async def case_extend(self, agent: AgentInfo, number: str, reason: str, hours: float, cid: Any = None) -> None:
        """Extend the progress-update deadline by ``hours``; only with a stated reason."""
        await self._case_action(agent, number, "case_extend", cid, self.cases.extend_sla, reason, agent.actor,
                                hours, reason=reason, hours=hours)

"""The business configuration (``config/humanline.yml``) as typed, immutable dataclasses.

Queues and their display names, category → queue routing, SLA defaults, agent defaults and
the plan catalogue. The hub and the action server both load it through :meth:`HumanlineConfig.load`;
nothing else reads the YAML file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.settings import DEFAULT_CONFIG_PATH as SETTINGS_DEFAULT_CONFIG_PATH
from bot.settings import config_path as settings_config_path

DEFAULT_CONFIG_PATH = Path(SETTINGS_DEFAULT_CONFIG_PATH)


class ConfigError(ValueError):
    """``config/humanline.yml`` is missing a required part or contradicts itself."""


@dataclass(frozen=True)
class QueueConfig:
    """A specialist queue: its id, display name per language and first-response target."""

    name: str
    display: dict[str, str]
    first_response_minutes: int = 10

    def display_for(self, lang: str | None) -> str:
        """The display name in ``lang``; English, then the queue id, when that is missing."""
        return self.display.get(lang or "en") or self.display.get("en") or self.name


@dataclass(frozen=True)
class SlaConfig:
    """SLA defaults: first response (minutes), progress updates (hours), follow-up (days)."""

    first_response_minutes: int = 10
    progress_update_hours: int = 24
    follow_up_days: int = 7
    #: a resolved case can be reopened by its customer for this many days after resolution
    reopen_window_days: int = 14


@dataclass(frozen=True)
class AgentsConfig:
    """Agent defaults: how many conversations an agent holds at once unless a supervisor set
    another limit for that agent."""

    max_concurrent_default: int = 3


@dataclass(frozen=True)
class PlanConfig:
    """One plan of the catalogue. ``rank`` orders plans: higher is bigger."""

    id: str
    names: dict[str, str]
    aliases: tuple[str, ...]
    monthly_price: float
    rank: int

    def name_for(self, lang: str | None) -> str:
        """The plan's name in ``lang`` (English, then the id, as fallbacks)."""
        return self.names.get(lang or "en") or self.names.get("en") or self.id


@dataclass(frozen=True)
class PlansConfig:
    """The plan catalogue plus the one effective-date rule shared by every kind of change."""

    effective_rule: str
    catalogue: dict[str, PlanConfig]
    default_current_plan: str


@dataclass(frozen=True)
class HumanlineConfig:
    """Everything in ``config/humanline.yml``."""

    queues: dict[str, QueueConfig]
    routing: dict[str, str]
    default_queue: str
    sla: SlaConfig = field(default_factory=SlaConfig)
    plans: PlansConfig | None = None
    path: str | None = None
    #: the queue of a danger handoff (promise 9); the default queue when not configured
    danger_queue: str = ""
    #: emergency number per region (``{"CN": "110 / 120", …}``) and the region used without a setting
    emergency_numbers: dict[str, str] = field(default_factory=dict)
    default_region: str = ""

    def emergency_number(self, region: str | None = None) -> str:
        """The emergency number for ``region`` (else the default region); ``""`` when unknown."""
        for key in (region, self.default_region):
            if key and key.upper() in self.emergency_numbers:
                return self.emergency_numbers[key.upper()]
        return ""
    agents: AgentsConfig = field(default_factory=AgentsConfig)

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None) -> HumanlineConfig:
        """Read and validate the configuration.

        :param path: the YAML file; default ``$HUMANLINE_CONFIG`` or ``config/humanline.yml``.
        :raises ConfigError: unknown queue in the routing, missing sections, bad plan ranks…
        """
        chosen = Path(path or settings_config_path())
        try:
            raw = yaml.safe_load(chosen.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ConfigError(f"configuration file not found: {chosen}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"{chosen}: expected a mapping at the top level")
        return cls.from_dict(raw, path=str(chosen))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, path: str | None = None) -> HumanlineConfig:
        """Build and validate a configuration from an already parsed mapping."""
        where = path or "<config>"
        queues_raw = raw.get("queues") or {}
        if not isinstance(queues_raw, dict) or not queues_raw:
            raise ConfigError(f"{where}: 'queues' must be a non-empty mapping")
        sla_raw = raw.get("sla") or {}
        sla = SlaConfig(
            first_response_minutes=int(sla_raw.get("first_response_minutes", 10)),
            progress_update_hours=int(sla_raw.get("progress_update_hours", 24)),
            follow_up_days=int(sla_raw.get("follow_up_days", 7)),
            reopen_window_days=int(sla_raw.get("reopen_window_days", 14)),
        )
        if (sla.first_response_minutes <= 0 or sla.progress_update_hours <= 0 or sla.follow_up_days < 0
                or sla.reopen_window_days <= 0):
            raise ConfigError(f"{where}: SLA durations must be positive")
        # A queue without its own first-response target takes the SLA default.
        queues = {
            str(name): QueueConfig(
                name=str(name),
                display={str(k): str(v) for k, v in ((q or {}).get("display") or {}).items()},
                first_response_minutes=int((q or {}).get("first_response_minutes", sla.first_response_minutes)),
            )
            for name, q in queues_raw.items()
        }
        for q in queues.values():
            if q.first_response_minutes <= 0:
                raise ConfigError(f"{where}: queue '{q.name}': first_response_minutes must be positive")
        routing = {str(k): str(v) for k, v in (raw.get("routing") or {}).items()}
        for category, queue in routing.items():
            if queue not in queues:
                raise ConfigError(f"{where}: routing '{category}' points at unknown queue '{queue}'")
        default_queue = str(raw.get("default_queue") or "general")
        if default_queue not in queues:
            raise ConfigError(f"{where}: default_queue '{default_queue}' is not a declared queue")
        plans = _plans(raw.get("plans"), where) if raw.get("plans") else None
        danger_queue = str(raw.get("danger_queue") or default_queue)
        if danger_queue not in queues:
            raise ConfigError(f"{where}: danger_queue '{danger_queue}' is not a declared queue")
        emergency = raw.get("emergency") or {}
        if not isinstance(emergency, dict) or not isinstance(emergency.get("numbers") or {}, dict):
            raise ConfigError(f"{where}: 'emergency' must be a mapping with a 'numbers' mapping")
        numbers = {str(k).upper(): str(v) for k, v in (emergency.get("numbers") or {}).items()}
        default_region = str(emergency.get("default_region") or "").upper()
        if default_region and default_region not in numbers:
            raise ConfigError(f"{where}: emergency.default_region '{default_region}' has no number")
        agents_raw = raw.get("agents") or {}
        if not isinstance(agents_raw, dict):
            raise ConfigError(f"{where}: 'agents' must be a mapping")
        agents = AgentsConfig(max_concurrent_default=int(agents_raw.get("max_concurrent_default", 3)))
        if agents.max_concurrent_default < 1:
            raise ConfigError(f"{where}: agents.max_concurrent_default must be at least 1")
        return cls(
            queues=queues, routing=routing, default_queue=default_queue, sla=sla, plans=plans, path=path,
            danger_queue=danger_queue, emergency_numbers=numbers, default_region=default_region, agents=agents,
        )

    def queue_display(self, queue: str | None, lang: str | None) -> str:
        """The customer-facing name of ``queue`` in ``lang``: English when that language is missing,
        the queue id itself for a queue not in the configuration, ``""`` for no queue.

        The one rule for queue names; :func:`bot.services.routing.queue_display`, the queue and case
        services and the actions all use it."""
        if not queue:
            return ""
        q = self.queues.get(queue)
        return q.display_for(lang) if q is not None else queue

    def first_response_minutes(self, queue: str | None) -> int:
        """Minutes allowed for the first human response in ``queue``: the queue's own target (a queue
        without one takes the SLA default when loaded), the SLA default for a queue not configured."""
        q = self.queues.get(queue or "")
        return q.first_response_minutes if q is not None else self.sla.first_response_minutes

    def queue_of_category(self, category: str | None) -> str:
        """The queue of a handoff for a case of ``category``: its routed queue, the default queue
        for no category or one the routing does not know (unlike :meth:`queue_for`, never raises)."""
        if category and category in self.routing:
            return self.routing[category]
        return self.default_queue

    def queue_for(self, category: str) -> str:
        """The specialist queue of a case category.

        :raises ValueError: the category is not routed by the configuration.
        """
        try:
            return self.routing[category]
        except KeyError:
            known = ", ".join(sorted(self.routing))
            raise ValueError(f"unknown case category {category!r}; expected one of: {known}") from None


def _plans(raw: Any, where: str) -> PlansConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'plans' must be a mapping")
    catalogue_raw = raw.get("catalogue") or {}
    catalogue: dict[str, PlanConfig] = {}
    for plan_id, p in catalogue_raw.items():
        p = p or {}
        catalogue[str(plan_id)] = PlanConfig(
            id=str(plan_id),
            names={str(k): str(v) for k, v in (p.get("names") or {}).items()},
            aliases=tuple(str(a) for a in (p.get("aliases") or ())),
            monthly_price=float(p.get("monthly_price", 0)),
            rank=int(p.get("rank", 0)),
        )
    ranks = [p.rank for p in catalogue.values()]
    if len(set(ranks)) != len(ranks):
        raise ConfigError(f"{where}: plan ranks must be distinct (they decide upgrade vs downgrade)")
    rule = str(raw.get("effective_rule") or "next_billing_cycle")
    if rule != "next_billing_cycle":
        raise ConfigError(f"{where}: unsupported plans.effective_rule {rule!r} (supported: next_billing_cycle)")
    default_plan = str(raw.get("default_current_plan") or "")
    if default_plan and default_plan not in catalogue:
        raise ConfigError(f"{where}: default_current_plan '{default_plan}' is not in the catalogue")
    return PlansConfig(effective_rule=rule, catalogue=catalogue, default_current_plan=default_plan)


__all__ = [
    "AgentsConfig",
    "DEFAULT_CONFIG_PATH",
    "ConfigError",
    "HumanlineConfig",
    "PlanConfig",
    "PlansConfig",
    "QueueConfig",
    "SlaConfig",
]

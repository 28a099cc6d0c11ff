"""Business rules in plain Python, shared by the hub and the action server.

Modules (import them directly; this package imports nothing eagerly so that the action server
and the hub load only what they use):

* :mod:`bot.services.config` — ``HumanlineConfig.load()``: queues, routing, SLA, plans.
* :mod:`bot.services.routing` — ``route(category)``, ``queue_display(queue, lang)``.
* :mod:`bot.services.sla` — pure due-time and breach rules.
* :mod:`bot.services.cases` — ``CaseService``: the only place with rules about cases.
* :mod:`bot.services.plans` — ``PlanChangeService``: symmetric plan changes (promise 5).
* :mod:`bot.services.notifications` — ``Outbox`` and senders.
* :mod:`bot.services.audit` — ``record(session, actor, action, target, detail)``.
"""

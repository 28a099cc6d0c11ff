"""Humanline's rasa_sdk action server (``rasa run actions``): one small class per action.

Every business rule lives in :mod:`bot.services`; the actions read the tracker, call a service
and pick the response. See docs/dialogue.md.
"""

from actions.cases import ActionCaseStatus, ActionOpenCase, ActionRateCase, ActionReopenCase
from actions.forms import ValidateCaseReferenceForm, ValidatePlanChangeForm
from actions.handoff import ActionHandoff
from actions.plans import ActionChangePlan, ActionProposePlanChange, ActionRevisePlanChange

__all__ = [
    "ActionCaseStatus",
    "ActionChangePlan",
    "ActionHandoff",
    "ActionOpenCase",
    "ActionProposePlanChange",
    "ActionRateCase",
    "ActionReopenCase",
    "ActionRevisePlanChange",
    "ValidateCaseReferenceForm",
    "ValidatePlanChangeForm",
]

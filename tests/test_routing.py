"""bot/services/routing.py: a handoff's queue follows the conversation's request (issue #12, item 5),
and the danger queue and emergency numbers of config/humanline.yml (promise 9)."""

from __future__ import annotations

import pytest

from bot.services.config import ConfigError, HumanlineConfig
from bot.services.routing import CATEGORIES, category_of_intent, handoff_queue

CONFIG = HumanlineConfig.load()


@pytest.mark.parametrize(("intent", "category"), [
    ("downgrade_plan", "plan_change"), ("upgrade_plan", "plan_change"), ("cancel_subscription", "plan_change"),
    ("request_refund", "refund"), ("complaint_billing", "billing"), ("complaint_service", "service"),
    ("complaint_privacy", "privacy"), ("greet", None), ("check_case_status", None), (None, None),
])
def test_category_of_intent(intent: str | None, category: str | None) -> None:
    assert category_of_intent(intent) == category


def test_the_open_case_comes_first() -> None:
    assert handoff_queue("privacy", ["downgrade_plan"], CONFIG) == "data_protection"


def test_else_the_last_understood_request_newest_first() -> None:
    intents = [None, "nlu_fallback", "inform", "downgrade_plan", "request_refund"]
    assert handoff_queue(None, intents, CONFIG) == "account_services"
    assert handoff_queue(None, ["complaint_service", "downgrade_plan"], CONFIG) == "service_supervision"


def test_else_the_default_queue() -> None:
    assert handoff_queue(None, [], CONFIG) == "general"
    assert handoff_queue(None, ["greet", None, "check_case_status"], CONFIG) == "general"
    assert handoff_queue("no_such_category", [], CONFIG) == "general"


def test_danger_goes_to_the_danger_queue_whatever_the_request() -> None:
    assert handoff_queue("refund", ["request_refund"], CONFIG, danger=True) == "safety"


def test_the_shipped_configuration_has_a_safety_queue_served_within_5_minutes() -> None:
    assert CONFIG.danger_queue == "safety" and CONFIG.queues["safety"].first_response_minutes == 5
    assert "safety" in CATEGORIES and CONFIG.queue_for("safety") == "safety"
    assert {"en", "zh-Hans", "zh-Hant"} <= set(CONFIG.queues["safety"].display)


@pytest.mark.parametrize(("region", "number"), [
    (None, "110 / 120"), ("CN", "110 / 120"), ("hk", "999"), ("TW", "110 / 119"), ("US", "911"), ("GB", "999"),
    ("XX", "110 / 120"),  # unknown region: the default region's number
])
def test_emergency_number_per_region(region: str | None, number: str) -> None:
    assert CONFIG.emergency_number(region) == number


def _raw(**extra: object) -> dict:
    return {"queues": {"general": {}, "safety": {"first_response_minutes": 5}}, "routing": {"general": "general"},
            **extra}


def test_configuration_is_validated() -> None:
    assert HumanlineConfig.from_dict(_raw()).danger_queue == "general"  # not configured: the default queue
    assert HumanlineConfig.from_dict(_raw()).emergency_number("US") == ""
    with pytest.raises(ConfigError):
        HumanlineConfig.from_dict(_raw(danger_queue="nowhere"))
    with pytest.raises(ConfigError):
        HumanlineConfig.from_dict(_raw(emergency={"default_region": "US", "numbers": {"GB": "999"}}))
    with pytest.raises(ConfigError):
        HumanlineConfig.from_dict(_raw(emergency={"numbers": ["911"]}))


def test_one_rule_for_queue_names_targets_and_category_queues() -> None:
    """The queue name, first-response target and category → queue of the hub, the case service
    and the actions all come from HumanlineConfig (issue #15, item 6)."""
    config = HumanlineConfig.from_dict(_raw(sla={"first_response_minutes": 7},
                                            queues={"general": {"display": {"en": "Care", "zh-Hans": "客服"}},
                                                    "safety": {"first_response_minutes": 5}}))
    assert config.queue_display("general", "zh-Hans") == "客服"
    assert config.queue_display("general", "zh-Hant") == "Care"  # missing language: English
    assert config.queue_display("safety", "en") == "safety"  # no display name: the id
    assert config.queue_display("nowhere", "en") == "nowhere" and config.queue_display(None, "en") == ""
    # A queue without its own target takes the SLA default (it used to take 10 whatever the SLA said).
    assert config.first_response_minutes("general") == 7
    assert config.first_response_minutes("safety") == 5
    assert config.first_response_minutes("nowhere") == 7
    assert config.queue_of_category("general") == "general"
    assert config.queue_of_category("refund") == "general" and config.queue_of_category(None) == "general"


def test_a_queue_target_must_be_positive() -> None:
    with pytest.raises(ConfigError, match="first_response_minutes"):
        HumanlineConfig.from_dict(_raw(queues={"general": {"first_response_minutes": 0}}))


def test_the_configuration_path_comes_from_settings(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """HUMANLINE_CONFIG is read by bot.settings only; HumanlineConfig.load and Settings agree."""
    from bot.settings import Settings

    other = tmp_path / "humanline.yml"
    other.write_text("queues: {desk: {display: {en: Desk}}}\ndefault_queue: desk\n", encoding="utf-8")
    monkeypatch.setenv("HUMANLINE_CONFIG", str(other))
    assert Settings.from_env().config_path == str(other)
    assert list(HumanlineConfig.load().queues) == ["desk"] and HumanlineConfig.load().path == str(other)
    monkeypatch.setenv("HUMANLINE_CONFIG", "")
    assert Settings.from_env().config_path == HumanlineConfig.load().path

"""Promise 5 in the dialogue: a downgrade (or a cancellation) never takes more bot turns than an upgrade.

Checked on the training data (rules and stories: the two paths are the same steps with the intent
swapped), on the conversation tests, and — marked ``model`` — on the trained model: the policies
predict the same actions for the downgrade and the upgrade conversations of every language, and the
NLU reads the customer's words as the right request.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.i18n import LANGS

ROOT = Path(__file__).resolve().parent.parent
PLAN_INTENTS = ("upgrade_plan", "downgrade_plan", "cancel_subscription")


def _load(path: Path, key: str) -> list[dict[str, Any]]:
    return yaml.safe_load(path.read_text(encoding="utf-8")).get(key) or []


def _first_intent(steps: list[dict[str, Any]]) -> str | None:
    return next((s["intent"] for s in steps if "intent" in s), None)


def _normalised(steps: list[dict[str, Any]]) -> list[str]:
    """The steps with the plan intent and the plan value made anonymous."""
    out = []
    for step in steps:
        if step.get("intent") in PLAN_INTENTS:
            out.append("intent:PLAN_CHANGE")
        elif "slot_was_set" in step:
            keys = [next(iter(s)) if isinstance(s, dict) else s for s in step["slot_was_set"]]
            out.append("slots:" + ",".join(keys))
        else:
            out.append(repr(sorted(step.items(), key=lambda kv: kv[0])))
    return out


def _bot_turns(steps: list[dict[str, Any]]) -> int:
    return sum(1 for s in steps if "action" in s and s["action"] != "action_listen")


def _by_intent(blocks: list[dict[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    out: dict[str, list[list[dict[str, Any]]]] = {i: [] for i in PLAN_INTENTS}
    for block in blocks:
        steps = block.get("steps") or []
        intent = _first_intent(steps)
        if intent in out:
            out[intent].append(steps)
    return out


def test_rules_for_upgrade_downgrade_and_cancel_are_the_same_steps() -> None:
    rules = _by_intent(_load(ROOT / "data" / "rules.yml", "rules"))
    shapes = {intent: sorted(map(repr, map(_normalised, blocks))) for intent, blocks in rules.items()}
    assert shapes["upgrade_plan"], "no rule starts an upgrade"
    assert shapes["upgrade_plan"] == shapes["downgrade_plan"] == shapes["cancel_subscription"]


def test_training_stories_for_downgrade_mirror_upgrade() -> None:
    stories = _by_intent(_load(ROOT / "data" / "stories.yml", "stories"))
    up = sorted(map(repr, map(_normalised, stories["upgrade_plan"])))
    down = sorted(map(repr, map(_normalised, stories["downgrade_plan"])))
    assert up and up == down
    # a cancellation asks nothing: never more bot turns than the shortest upgrade
    shortest_upgrade = min(_bot_turns(s) for s in stories["upgrade_plan"])
    assert all(_bot_turns(s) <= shortest_upgrade for s in stories["cancel_subscription"])


def _test_plan_stories() -> dict[str, dict[str, list[dict[str, Any]]]]:
    """{lang: {story title without the language: steps}} from tests/stories/test_plan_changes.yml."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {lang: {} for lang in LANGS}
    for story in _load(ROOT / "tests" / "stories" / "test_plan_changes.yml", "stories"):
        title, _, lang = story["story"].rpartition(" (")
        out[lang.rstrip(")")][title] = story["steps"]
    return out


@pytest.mark.parametrize("lang", LANGS)
def test_conversation_tests_take_the_same_bot_turns(lang: str) -> None:
    stories = _test_plan_stories()[lang]
    assert _bot_turns(stories["downgrade, plan asked"]) == _bot_turns(stories["upgrade, plan asked"])
    assert _bot_turns(stories["cancel"]) <= _bot_turns(stories["upgrade, plan asked"])


def test_conversation_tests_propose_before_they_record() -> None:
    """Every plan-change conversation test records (action_change_plan) only right after a proposal
    and the customer's yes."""
    for lang, stories in _test_plan_stories().items():
        for title, steps in stories.items():
            actions = [s.get("action") or s.get("intent") for s in steps if "action" in s or "intent" in s]
            for i, name in enumerate(actions):
                if name == "action_change_plan":
                    assert actions[i - 2 : i] == ["action_propose_plan_change", "affirm"], (lang, title, actions)
            assert "action_change_plan" in actions, (lang, title)


def test_the_rules_alone_predict_every_plan_change_conversation() -> None:
    """Without any trained model: the rules (RulePolicy, trained here on data/ in a second) predict
    every bot action of tests/stories/test_plan_changes.yml — the yes to a proposal records, the no
    revises, a plan button starts the form — and contradict no story."""
    import tempfile

    from rasa.core.policies.rule_policy import RulePolicy
    from rasa.engine.graph import ExecutionContext, GraphSchema
    from rasa.engine.storage.local_model_storage import LocalModelStorage
    from rasa.engine.storage.resource import Resource
    from rasa.shared.core.events import ActionExecuted, UserUttered
    from rasa.shared.core.generator import TrainingDataGenerator
    from rasa.shared.core.trackers import DialogueStateTracker
    from rasa.shared.core.training_data.story_reader.yaml_story_reader import YAMLStoryReader
    from rasa.shared.importers.importer import TrainingDataImporter

    importer = TrainingDataImporter.load_from_dict(
        domain_path=str(ROOT / "domain.yml"), training_data_paths=[str(ROOT / "data")]
    )
    domain = importer.get_domain()
    trackers = TrainingDataGenerator(importer.get_stories(), domain, augmentation_factor=0).generate()
    policy = RulePolicy.create(
        {**RulePolicy.get_default_config(), "core_fallback_threshold": 0.3},
        LocalModelStorage(Path(tempfile.mkdtemp())),
        Resource("rules"),
        ExecutionContext(GraphSchema({}), "rules"),
    )
    policy.train(trackers, domain)  # raises on a contradiction between rules and stories

    wrong = []
    for story in YAMLStoryReader(domain).read_from_file(ROOT / "tests" / "stories" / "test_plan_changes.yml"):
        tracker = DialogueStateTracker.from_events(story.block_name, [], slots=domain.slots)

        def expect(action: str, tracker: DialogueStateTracker = tracker, title: str = story.block_name) -> None:
            prediction = policy.predict_action_probabilities(tracker, domain)
            best = max(range(len(prediction.probabilities)), key=prediction.probabilities.__getitem__)
            if domain.action_names_or_texts[best] != action:
                wrong.append((title, action, domain.action_names_or_texts[best]))

        for event in story.events:
            if isinstance(event, UserUttered):
                event = UserUttered(None, {"name": event.intent_name}, event.entities)
                if tracker.latest_action_name != "action_listen":
                    if tracker.latest_action_name is not None:
                        expect("action_listen")  # the bot's turn is over: it waits for the customer
                    tracker.update(ActionExecuted("action_listen"))
            elif isinstance(event, ActionExecuted) and event.action_name != "action_listen":
                expect(event.action_name)
            tracker.update(event)
        expect("action_listen")
    assert not wrong, wrong


# ----------------------------------------------------------------------------- with the trained model


def _predicted_actions(agent: Any, steps: list[dict[str, Any]], tmp_path: Path) -> list[str]:
    """The actions the model's policies predict for one conversation (the story's user turns)."""
    from rasa.core.test import test as rasa_test

    path = tmp_path / "story.yml"
    path.write_text(yaml.safe_dump({"version": "3.1", "stories": [{"story": "s", "steps": steps}]}), encoding="utf-8")
    result = asyncio.run(rasa_test(str(path), agent, fail_on_prediction_errors=True, disable_plotting=True))
    return [a["predicted"] for a in result["actions"] if a["predicted"] != "action_listen"]


@pytest.mark.model
@pytest.mark.parametrize("lang", LANGS)
def test_model_predicts_the_same_turns_for_downgrade_and_upgrade(shipped_agent, lang: str, tmp_path: Path) -> None:
    stories = _test_plan_stories()[lang]
    down = _predicted_actions(shipped_agent, stories["downgrade, plan asked"], tmp_path)
    up = _predicted_actions(shipped_agent, stories["upgrade, plan asked"], tmp_path)
    cancel = _predicted_actions(shipped_agent, stories["cancel"], tmp_path)
    assert down == up, (down, up)
    assert len(cancel) <= len(up)
    assert "action_change_plan" in down and "action_change_plan" in cancel


@pytest.mark.model
@pytest.mark.parametrize("lang", LANGS)
def test_model_understands_the_plan_requests(shipped_agent, lang: str) -> None:
    stories = _test_plan_stories()[lang]
    for title in ("downgrade, plan asked", "upgrade, plan asked", "cancel"):
        first = stories[title][0]
        parsed = asyncio.run(shipped_agent.parse_message(first["user"].strip()))
        assert parsed["intent"]["name"] == first["intent"], (first["user"], parsed["intent"])

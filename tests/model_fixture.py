"""The ``trained_model`` fixture: the model ``make train`` produced for the current data.

Tests that need the model are marked ``model``. ``make test`` trains before running them, so a
missing model is a failure with a clear message, never a silent skip.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def trained_model() -> Path:
    from bot.training import current_model

    if os.environ.get("HUMANLINE_MODEL"):  # test a given model archive instead
        model = Path(os.environ["HUMANLINE_MODEL"])
        if not model.is_file():
            pytest.fail(f"HUMANLINE_MODEL={model} does not exist")
        return model
    model = current_model()
    if model is None:
        pytest.fail("no trained model for the current config and data: run `make train` (`make test` does)")
    return model


@pytest.fixture(scope="session")
def shipped_agent(trained_model: Path) -> Any:
    """The shipped model loaded once as a ``rasa.core.agent.Agent`` (a load takes seconds)."""
    from rasa.core.agent import Agent

    return Agent.load(str(trained_model))

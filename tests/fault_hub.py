"""``python -m tests.fault_hub``: the real hub process (``bot.hub.create_app`` served by Sanic,
settings from the environment as ``python -m bot serve`` reads them) with a brain pool of real
worker processes running the scripted fake brain of ``tests/test_brain_pool.py`` — for the
fault tests whose fault is not about the model (``tests/test_faults.py``).

The fake brain echoes (``echo <text>``, a resolved small-talk turn); ``sleep <s> …`` answers
after ``s`` seconds; ``raise`` fails the turn.
"""

from __future__ import annotations

import logging

from bot.brain_pool import BrainPool
from bot.hub import create_app
from bot.settings import Settings

FAKE_BRAIN = "tests.test_brain_pool:fake_brain"


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    brain = BrainPool({}, workers=1, factory=FAKE_BRAIN, load_timeout_s=60)
    app = create_app(settings, brain=brain)
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 1
    app.run(host=settings.host, port=settings.port, access_log=False)


if __name__ == "__main__":
    main()

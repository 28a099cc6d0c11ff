"""bot/i18n.py is the one list of languages (issue #15, item 6)."""

from __future__ import annotations

from bot.dialogues import SCRIPTS
from bot.i18n import LANGS, LANGUAGE_NAMES, lang_or_default


def test_one_language_list_english_first() -> None:
    assert LANGS == ("en", "zh-Hans", "zh-Hant")
    assert SCRIPTS == LANGS and set(LANGUAGE_NAMES) == set(LANGS)


def test_lang_or_default() -> None:
    assert [lang_or_default(v) for v in ("zh-Hant", "zh-Hans", "en")] == ["zh-Hant", "zh-Hans", "en"]
    assert lang_or_default("fr") == "en" and lang_or_default(None) == "en" and lang_or_default(3) == "en"
    assert lang_or_default("zh", "zh-Hans") == "zh-Hans"

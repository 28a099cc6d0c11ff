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


def test_one_catalogue_every_text_in_every_language() -> None:
    from bot.i18n import _TEXTS, t

    assert {"queued", "case_created", "case_reopen_window_closed"} <= set(_TEXTS)
    for key, entry in _TEXTS.items():
        assert set(entry) == set(LANGS), key
    assert t("case_rated", "zh-Hant", number="HL-20261104-0001") == "感謝您對案件 HL-20261104-0001 的評價。"
    assert t("case_rated", "fr", number="X") == t("case_rated", "en", number="X")

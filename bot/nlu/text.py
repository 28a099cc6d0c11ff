"""Languages, scripts and the pure text functions of the NLU.

``Lang`` is the language code used everywhere (slots, store, hub). These functions are pure and
cheap to import (no Rasa, no TensorFlow): the NLU component in :mod:`bot.nlu.normalizer` and the
hub both use them, the hub through :mod:`bot.i18n`, which re-exports them. They live under
``bot/nlu/`` because they are an input of the model: the model's name hashes this folder
(:func:`bot.training.model_hash`), while the hub's texts in :mod:`bot.i18n` change without a
retraining.

``normalize_text`` is length-preserving — output character *i* comes from input character *i* —
so entity offsets computed on the normalised text are valid on the original text too.
"""
from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

Lang = Literal["zh-Hans", "zh-Hant", "en"]
#: The languages (scripts) Humanline speaks, English — the fallback — first. The one list: the hub,
#: the services, the actions and the evaluation tools all use it.
LANGS: tuple[Lang, ...] = ("en", "zh-Hans", "zh-Hant")
#: Their names in English, as supervisors and agents read them.
LANGUAGE_NAMES: dict[str, str] = {"en": "English", "zh-Hans": "Simplified Chinese", "zh-Hant": "Traditional Chinese"}


def lang_or_default(value: object, default: Lang = "en") -> Lang:
    """``value`` when it is one of :data:`LANGS`, else ``default``."""
    for lang in LANGS:
        if value == lang:
            return lang
    return default

# Characters that only written Cantonese uses (嘅 咗 冇 唔 啲 係 and a few more of the same kind).
# They mark a Hong Kong writer even when the rest of the message happens to be in simplified form.
CANTONESE_MARKERS = frozenset("嘅咗冇唔啲係哋喺嚟嘢佢嬲咩咁啱嗰睇畀攞乜嘥喇啫喎囉嘞冚攰瞓揸黐")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef]")
_LATIN_WORD = re.compile(r"[a-z]{2,}|^[a-z]$")


@lru_cache(maxsize=1)
def _converter():  # type: ignore[no-untyped-def]
    from opencc import OpenCC

    # hk2s = Hong Kong variants → standard Traditional, then Traditional → Simplified (phrases first).
    return OpenCC("hk2s")


@lru_cache(maxsize=4096)
def _convert_char(ch: str) -> str:
    out = _converter().convert(ch)
    return out if len(out) == 1 else ch


def to_simplified(text: str) -> str:
    """Traditional (incl. Hong Kong variants) → Simplified Chinese; other characters unchanged.

    Phrase-level conversion (OpenCC), falling back to character by character when a phrase rule
    would change the length, so the result always has ``len(text)`` characters.
    """
    if not text or not _CJK.search(text):
        return text
    out = _converter().convert(text)
    if len(out) == len(text):
        return out
    return "".join(_convert_char(ch) for ch in text)


def _width_fold(ch: str, casefold: bool) -> str:
    norm = unicodedata.normalize("NFKC", ch)
    if len(norm) != 1:  # e.g. "㈱" → "(株)": keep the character rather than move offsets
        norm = ch
    if casefold:
        low = norm.lower()
        if len(low) == 1:
            norm = low
    return norm


def normalize_text(text: str, *, casefold: bool = True) -> str:
    """The text the NLU pipeline sees: Simplified, half-width, lower case.

    Full-width letters, digits and punctuation become ASCII (NFKC, one character at a time; the
    ideographic full stop "。" has no ASCII form and stays), the ideographic space becomes a space,
    Traditional becomes Simplified, and letters are lower-cased. Length-preserving.
    """
    if not text:
        return text
    folded = "".join(_width_fold(ch, casefold) for ch in text)
    return to_simplified(folded)


def script_signal(text: str) -> Lang | None:
    """The script of ``text``, or ``None`` when it carries no language signal.

    zh-Hant when Traditional→Simplified conversion changes a CJK character or a Cantonese marker
    is present; zh-Hans for any other CJK text (code-switched "我想 cancel" included); en when
    there is a Latin word; ``None`` for digits, ids such as "SO20261104", punctuation, emoji or
    a ``/intent{...}`` button payload.
    """
    if not text or text.startswith("/"):
        # Empty, or an intent payload from a button (`/inform{"plan": "basic"}`): no signal, so
        # a Chinese conversation is not switched to English by a tap.
        return None
    text = unicodedata.normalize("NFKC", text)
    if _CJK.search(text):
        if any(ch in CANTONESE_MARKERS for ch in text):
            return "zh-Hant"
        simplified = to_simplified(text)
        for a, b in zip(text, simplified, strict=False):
            if a != b and _CJK.match(a):
                return "zh-Hant"
        return "zh-Hans"
    words = " ".join(w for w in text.lower().split() if not any(c.isdigit() for c in w))
    if _LATIN_WORD.search(words):
        return "en"
    return None


def detect_script(text: str) -> Lang:
    """The script of ``text``: ``script_signal`` with ``"en"`` when there is no signal."""
    return script_signal(text) or "en"


@lru_cache(maxsize=1)
def _to_traditional():  # type: ignore[no-untyped-def]
    from opencc import OpenCC

    return OpenCC("s2t")


def reads_the_same_in_both_scripts(text: str) -> bool:
    """True for Chinese text with no character that differs between Simplified and
    Traditional ("基本方案", "你好"): on its own it cannot tell which script the customer uses."""
    return bool(_CJK.search(text)) and to_simplified(text) == text and _to_traditional().convert(text) == text


def resolve_script(text: str, previous: str | None) -> Lang | None:
    """The script to answer ``text`` in, given the script of the conversation so far.

    Like :func:`script_signal`, except that Chinese text which reads the same in both scripts
    keeps a Traditional conversation Traditional: a Taiwan customer answering "基本方案" to a
    question must not get the next reply in Simplified.
    """
    signal = script_signal(text)
    if signal == "zh-Hans" and previous == "zh-Hant" and reads_the_same_in_both_scripts(text):
        return "zh-Hant"
    return signal

"""Languages and scripts.

``Lang`` is the language code used everywhere (slots, store, hub). The text functions here are
pure and cheap to import (no Rasa, no TensorFlow): the NLU component in ``bot.nlu.normalizer``
and the hub both use them.

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


# ---- hub system messages -----------------------------------------------------------------------
# Texts the hub itself sends (queue, agent joins, hand-back…), one entry per language. The bot's
# own replies live in domain.yml; these are the words around the handoff.
_TEXTS: dict[str, dict[str, str]] = {
    "rule": {
        "en": "first come, first served within the {queue} queue",
        "zh-Hans": "在「{queue}」队列内按先来先服务的顺序分配",
        "zh-Hant": "在「{queue}」佇列內按先到先服務的順序分配",
    },
    "queued": {
        "en": "I am passing you to a person in the {queue} queue. You are number {position}; estimated wait "
        "about {minutes} min ({rule}).",
        "zh-Hans": "正在为您转接「{queue}」的人工客服。您排在第 {position} 位，预计等待约 {minutes} 分钟（{rule}）。",
        "zh-Hant": "正在為您轉接「{queue}」的真人客服。您排在第 {position} 位，預計等候約 {minutes} 分鐘（{rule}）。",
    },
    "no_agent": {
        "en": "No specialist of the {queue} queue is online right now. Your request is recorded{case}; you can "
        "expect an answer within {minutes} minutes, here or by message.",
        "zh-Hans": "「{queue}」目前没有在线的专员。您的请求已记录{case}，"
        "预计 {minutes} 分钟内答复，会在这里或通过短信通知您。",
        "zh-Hant": "「{queue}」目前沒有在線的專員。您的請求已記錄{case}，"
        "預計 {minutes} 分鐘內回覆，會在這裡或透過簡訊通知您。",
    },
    "technical_problem": {
        "en": "Sorry, something went wrong on our side and I could not finish this automatically. "
        "Nothing you wrote is lost; a person will take over.",
        "zh-Hans": "抱歉，我们的系统出了问题，无法自动完成。您发送的内容都已保存，将由工作人员继续为您处理。",
        "zh-Hant": "抱歉，我們的系統出了問題，無法自動完成。您傳送的內容都已保存，將由工作人員繼續為您處理。",
    },
    "danger": {
        "en": "If you are in immediate danger, call the emergency number {number} now. I am passing you to a "
        "person straight away, with priority.",
        "zh-Hans": "如果您正处于紧急危险中，请立即拨打紧急电话 {number}。我正在优先为您转接工作人员。",
        "zh-Hant": "如果您正處於緊急危險中，請立即撥打緊急電話 {number}。我正在優先為您轉接專人。",
    },
    "danger_no_number": {
        "en": "If you are in immediate danger, call your local emergency number now. I am passing you to a "
        "person straight away, with priority.",
        "zh-Hans": "如果您正处于紧急危险中，请立即拨打当地紧急电话。我正在优先为您转接工作人员。",
        "zh-Hant": "如果您正處於緊急危險中，請立即撥打當地緊急電話。我正在優先為您轉接專人。",
    },
    "case_ref": {"en": " as case {case}", "zh-Hans": "（案件编号 {case}）", "zh-Hant": "（案件編號 {case}）"},
    "agent_joined": {
        "en": "{name} has joined the conversation.",
        "zh-Hans": "{name} 已加入对话。",
        "zh-Hant": "{name} 已加入對話。",
    },
    "transferred": {
        "en": "You have been transferred to the {queue} queue.",
        "zh-Hans": "已将您转到「{queue}」队列。",
        "zh-Hant": "已將您轉到「{queue}」佇列。",
    },
    "requeued": {
        "en": "The specialist could not answer in time; you keep your place in the {queue} queue.",
        "zh-Hans": "专员未能及时回复，您在「{queue}」队列中的位置保持不变。",
        "zh-Hant": "專員未能及時回覆，您在「{queue}」佇列中的位置保持不變。",
    },
    "handed_back": {
        "en": "You are talking to the automated assistant again. Ask for a person at any time.",
        "zh-Hans": "您已回到智能助手。随时可以要求转人工。",
        "zh-Hant": "您已回到智慧助理。隨時可以要求轉真人客服。",
    },
    "resolved": {
        "en": "This conversation is closed. Write again any time if you need more help.",
        "zh-Hans": "本次对话已结束。如需更多帮助，随时可以再发消息。",
        "zh-Hant": "本次對話已結束。如需更多協助，隨時可以再傳訊息。",
    },
    # Case notifications (bot.services.cases), one per case event.
    "case_created": {
        "en": "Your case {number} has been opened and assigned to {queue}. A specialist will respond by {due}.",
        "zh-Hans": "您的工单 {number} 已受理，由{queue}处理。专员将在 {due} 前回复您。",
        "zh-Hant": "您的案件 {number} 已受理，由{queue}處理。專員將於 {due} 前回覆您。",
    },
    "case_stage_changed": {
        "en": "Case {number} is now at stage: {stage}.",
        "zh-Hans": "工单 {number} 当前阶段：{stage}。",
        "zh-Hant": "案件 {number} 目前階段：{stage}。",
    },
    "case_first_response": {
        "en": "A specialist from {queue} has picked up case {number}.",
        "zh-Hans": "{queue}的专员已开始处理工单 {number}。",
        "zh-Hant": "{queue}的專員已開始處理案件 {number}。",
    },
    "case_progress_update": {
        "en": "Update on case {number}: {text}",
        "zh-Hans": "工单 {number} 进展：{text}",
        "zh-Hant": "案件 {number} 進度：{text}",
    },
    "case_sla_extended": {
        "en": "Case {number} needs more time ({reason}). Next update by {due}.",
        "zh-Hans": "工单 {number} 需要更多时间（{reason}）。下次更新时间：{due}。",
        "zh-Hant": "案件 {number} 需要更多時間（{reason}）。下次更新時間：{due}。",
    },
    "case_resolved": {
        "en": "Case {number} has been resolved. We will follow up on {follow_up}. "
        "You can reopen it if the problem persists.",
        "zh-Hans": "工单 {number} 已解决，我们将于 {follow_up} 回访。如问题仍未解决，您可以重新打开工单。",
        "zh-Hant": "案件 {number} 已解決，我們將於 {follow_up} 回訪。如問題仍未解決，您可以重新開啟案件。",
    },
    "case_confirmed": {
        "en": "Thank you for confirming that case {number} is solved.",
        "zh-Hans": "感谢您确认工单 {number} 已解决。",
        "zh-Hant": "感謝您確認案件 {number} 已解決。",
    },
    "case_reopened": {
        "en": "Case {number} has been reopened and is with {queue} again. A specialist will respond by {due}.",
        "zh-Hans": "工单 {number} 已重新打开，由{queue}继续处理。专员将在 {due} 前回复您。",
        "zh-Hant": "案件 {number} 已重新開啟，由{queue}繼續處理。專員將於 {due} 前回覆您。",
    },
    "case_follow_up": {
        "en": "We are following up on case {number}: is the problem solved? Reply in the chat to reopen "
        "the case if it is not, or rate how it was handled (1-5).",
        "zh-Hans": "我们回访工单 {number}：问题解决了吗？如未解决，请在对话中回复以重新打开工单，"
        "或为处理情况评分（1-5）。",
        "zh-Hant": "我們回訪案件 {number}：問題解決了嗎？如未解決，請在對話中回覆以重新開啟案件，"
        "或為處理情況評分（1-5）。",
    },
    "case_reopen_window_closed": {
        "en": "Case {number} was resolved on {resolved} and can be reopened only until {until}. I've passed your "
        "message on to the team; a person will pick it up and open a new case if needed.",
        "zh-Hans": "工单 {number} 已于 {resolved} 解决，只能在 {until} 之前重新打开。您的留言我已转达，"
        "客服会跟进并在需要时为您新建工单。",
        "zh-Hant": "案件 {number} 已於 {resolved} 解決，只能在 {until} 之前重新開啟。您的留言我已轉達，"
        "客服會跟進並在需要時為您新建案件。",
    },
    "case_rated": {
        "en": "Thank you for rating the handling of case {number}.",
        "zh-Hans": "感谢您对工单 {number} 的评价。",
        "zh-Hant": "感謝您對案件 {number} 的評價。",
    },
}


def t(key: str, lang: str | None, **kw: object) -> str:
    """The text ``key`` (hub messages, and ``case_<event>`` case notifications) in ``lang`` (English
    when the language is unknown), formatted with ``kw``. The one text catalogue of the Python side."""
    entry = _TEXTS[key]
    return entry.get(lang or "en", entry["en"]).format(**kw)

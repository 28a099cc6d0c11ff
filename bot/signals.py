"""Frustration and danger: signals read from every customer message, beside the intent.

The NLU picks one intent per message, so anger inside a request ("this useless bot, where is my
refund") is heard as ``request_refund`` and emoji-only anger ("😤😤") as nothing at all. These
signals do not depend on which intent wins: :func:`read_signals` reads them from the raw text, and
the handoff guard (:mod:`bot.guard`) consults them before the brain sees the message.

* **Frustration** is a score in ``[0, 1]``: the sum of the weights of the cues found, capped at 1.
  Cues: a second classifier, :func:`frustration_probability` (a character n-gram logistic
  regression trained on the NLU data, ``bot/frustration_model.py``), at or above 0.5 (1.0); a
  lexicon of insults to the bot and complaints that nobody helps, in English, Simplified and
  Traditional Chinese and Cantonese (:data:`STRONG` weighs 1.0, :data:`MILD` 0.4, each Chinese
  mild group once); anger emoji (0.6 each, eye-roll/unamused/thumbs-down 0.3; a message made only
  of anger emoji scores 1.0); SHOUTING in capitals (0.6 for a sentence of four words or more, else
  0.3); a run of three or more exclamation marks (0.3); the same word or phrase three times in one
  message (``"hello? hello? hello?"``, 0.3). The guard hands off at
  ``GuardConfig.frustration_threshold`` (0.6): the classifier, one strong word, one anger emoji, or
  two weaker cues together. Lexicon and classifier together catch more than either alone.
* **Danger** is one of :data:`DANGER_KINDS` or ``None``: a threat, harassment or stalking (also by
  staff — a technician who visited and now sends messages), violence, self-harm, a medical
  emergency. The keyword lists favour recall: a false alarm costs a priority agent a look, a miss
  can cost much more. Negation and quotation are deliberately not handled.

The figures on labelled sets of our own (``tests/data/signals_*.yml``) are asserted by
``tests/test_signals.py`` and reported in ``docs/guard.md``; ``eval/signals_compare.py`` compares
lexicon, classifier and both.

Pure: no I/O, no clock, no Rasa import (the classifier is a Python table, scored without
scikit-learn). Matching is on the NFKC-normalised, case-folded text; Chinese entries are written in
both scripts (``[气氣]``) rather than converted, so nothing is loaded. About 3 ms per message.
"""

from __future__ import annotations

import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DANGER_KINDS",
    "MEDICAL",
    "SELF_HARM",
    "HARASSMENT",
    "THREAT",
    "VIOLENCE",
    "Signals",
    "frustration_probability",
    "read_signals",
]

THREAT: Final = "threat"
HARASSMENT: Final = "harassment"
VIOLENCE: Final = "violence"
SELF_HARM: Final = "self_harm"
MEDICAL: Final = "medical"
DANGER_KINDS: Final[tuple[str, ...]] = (SELF_HARM, MEDICAL, VIOLENCE, THREAT, HARASSMENT)
"""The danger categories, in the order they are tested (the first that matches is reported)."""


@dataclass(frozen=True)
class Signals:
    """What one customer message says about the customer, whatever its intent.

    Attributes:
        frustration: ``0.0`` (calm) to ``1.0`` (clearly angry).
        danger: One of :data:`DANGER_KINDS`, or ``None``.
        cues: The names of the cues that fired (``"lexicon:useless"``, ``"emoji"``, ``"caps"``…),
            for the agent's transcript and for tests.
    """

    frustration: float = 0.0
    danger: str | None = None
    cues: tuple[str, ...] = ()


# ---- frustration --------------------------------------------------------------------------------

STRONG_WEIGHT: Final = 1.0
MILD_WEIGHT: Final = 0.4
EMOJI_WEIGHT: Final = 0.6
STYLE_WEIGHT: Final = 0.3  # capitals, "!!!", in-message repetition

STRONG: Final[tuple[str, ...]] = (
    # English: insults to the bot or the service, swearing, "nobody helps", "waste of time".
    r"\buseless\b", r"\bworthless\b", r"\bpathetic\b", r"\bhopeless\b", r"\bincompetent\b",
    r"\b(?:stupid|dumb|idiotic|moronic)\b", r"\bidiots?\b", r"\bmorons?\b",
    r"\b(?:garbage|rubbish|trash|crap|crappy|junk)\b", r"\bshit(?:ty)?\b", r"\bf+u+c+k\w*", r"\bf\*+k\w*",
    r"\bwtf\b", r"\bffs\b", r"\bdamn\b", r"\bbloody\b", r"\bbullshit\b", r"\bpissed\b", r"\bsucks?\b",
    r"\bridiculous\b", r"\bunacceptable\b", r"\boutrageous\b", r"\babsurd\b", r"\bdisgust(?:ed|ing)\b",
    r"\bfurious\b", r"\bangry\b", r"\bfed up\b", r"\bsick (?:and tired )?of\b", r"\bhad enough\b",
    r"\bfrustrat(?:ed|ing)\b", r"\bannoy(?:ed|ing)\b", r"\bhate (?:this|you|it)\b", r"\bworst\b",
    r"\bscam(?:mers?)?\b", r"\b(?:is|are|what) a (?:joke|farce|disgrace)\b", r"\bare you (?:even )?listening\b",
    r"\bwhat(?:'s| is) wrong with (?:you|this|your)\b", r"\bignor(?:e|es|ed|ing) (?:me|my|us|what)\b",
    r"\bdisgrace\w*", r"\bi'?m done with\b", r"\bhad it with\b",
    r"\b(?:nobody|no one|no-one|noone)\b(?: \w+){0,3}? (?:helps?|helping|answers?|answering|cares?|listens?|"
    r"replies|responds?|does anything)\b",
    r"\bno(?:body|one)? (?:ever )?(?:help|answer|reply|response)s?\b(?! me with)",
    r"\bwast(?:e|ing) (?:of )?(?:my |our )?time\b", r"\b(?:round|around) in circles\b",
    r"\bhow many (?:more )?times\b", r"\bi(?:'ve| have)? (?:already )?(?:told|said|asked|explained)"
    r" (?:you |this |that |it )?(?:\w+ )?(?:times|already|before|twice)\b",
    r"\b(?:not|un)helpful\b", r"\byou(?:'re| are) not (?:helping|listening)\b", r"\bdoesn'?t help\b",
    r"\byou (?:don'?t|do not|never) (?:understand|listen)\b", r"\bcan'?t you (?:understand|read)\b",
    # Chinese (Simplified / Traditional): insults, swearing, anger, "nobody helps", "useless".
    r"垃圾", r"[废廢]物", r"[废廢][柴材]", r"[气氣]死", r"急死", r"有病|[神][经經]病", r"服了你|服咗你",
    r"[烂爛](?:公司|服[务務]|系[统統]|客服|机器人|機器人|透|到|死)", r"[气氣]人", r"搞什[么麼]", r"什[么麼]破",
    r"破(?:机器人|機器人|系[统統]|客服|公司|玩意)",
    r"[烂爛]透", r"坑人", r"[骗騙]子", r"[骗騙][钱錢]", r"太差", r"差[劲勁]", r"[恶噁]心", r"[无無][语語]",
    r"受[够夠]", r"忍[无無]可忍", r"[没沒]人(?:管|理|[帮幫]|回|[应應]|接)", r"[没沒]有?用(?![过過户戶到着著])",
    r"有什[么麼]用",
    r"用(?:都|也)[没沒冇]|一[点點]用(?:都|也)?[没沒冇]",
    r"[浪][费費](?:我|我的|我們|我们)?(?:[时時][间間])", r"白[痴癡]", r"笨蛋", r"[蠢]", r"[脑腦][残殘]", r"智障",
    r"傻[逼bBX瓜]",
    r"他[妈媽]的", r"你[妈媽]的?(?![妈媽])", r"尼[玛瑪]", r"\btmd\b", r"[滚滾](?:蛋|开|開)|[给給]我[滚滾]",
    r"[愤憤]怒", r"生[气氣]", r"火大",
    r"[烦煩]死", r"[烦煩]不[烦煩]",
    r"别[废廢][话話]|別[废廢][話话]", r"[听聽]不懂人[话話]", r"答非所[问問]", r"[说說]了(?:多少|几|幾|好几|好幾)[遍次]",
    r"岂有此理|豈有此理", r"太[过過]分", r"[离離][谱譜]", r"[糟][糕]透", r"什[么麼]鬼",
    # Cantonese.
    r"[激嬲][气氣]", r"好嬲", r"嬲死", r"[冇]用(?![過过])", r"\bon9\b", r"仆街", r"[顶頂]你[个個]肺", r"屌", r"𨳒",
    r"搞[乜咩]",
    r"[冇]人(?:理|[帮幫]|覆|聽|听)", r"[嘥](?:[我])?(?:[时時][间間])", r"[讲講]极都唔明|[讲講]極都唔明", r"乜鬼",
    r"[痴黐]线|[痴黐]線",
    r"[戆戇][鸠鳩]", r"死蠢", r"[顶頂]唔[顺順]", r"玩[嘢]",
)
MILD: Final[tuple[str, ...]] = (
    r"\bagain\b", r"\bstill\b", r"\bseriously\b", r"\bcome on\b", r"\bugh+\b", r"\bargh+\b", r"\bwhy can'?t\b",
    r"\bwhat the\b", r"\bnot working\b", r"\bunbelievable\b", r"\bterrible\b", r"\bawful\b", r"\bhorrible\b",
    r"\bjoke\b", r"\bforever\b", r"\bages\b", r"\bnothing happens\b", r"\banyone\b.*\?", r"\bupset\b",
    r"\bkeeps? (?:sending|giving|saying|asking|repeating|telling)\b",
    r"\bsame (?:answer|reply|message|thing|response)\b",
    r"\bstop (?:sending|saying|repeating|giving)\b",
    # Chinese, one weight per group: still not / why still / dissatisfied / again, the same.
    r"[还還][没沒]|一直|仲未|成日|多久|[几幾]耐",
    r"到底|究竟|[为為]什[么麼][还還]|[怎][么麼][还還]|怎[么麼]回事|[点點]解|搞掂[未]",
    r"(?<![麻])[烦煩]|[郁鬱][闷悶]|失望|不[满滿]|[离離][谱譜]",
    r"又|再也不|以后不会再|以後唔會再|唔會再用|[别別]再|唔好再|一[样樣]的(?:回[复覆]|答[复覆]|[话話])|同一句|同一[个個](?:答案|回)",
)
ANGER_EMOJI: Final = frozenset("😤😡🤬💢👿🖕😠👎🙄😒")
MILD_EMOJI: Final = frozenset("🙄😒👎")  # eye-roll, unamused, thumbs down: half an anger emoji

_STRONG_RE: Final = [re.compile(p) for p in STRONG]
_MILD_RE: Final = [re.compile(p) for p in MILD]
_BANGS: Final = re.compile(r"[!！]{3,}|(?:[!！][?？]|[?？][!！]){2,}")
_WORD: Final = re.compile(r"[^\W\d_]+")
_REPEAT: Final = re.compile(r"\b(\w{2,})\b(?:\W+\1\b){2,}")
_CJK_REPEAT: Final = re.compile(r"([\u4e00-\u9fff]{1,4})[\s,，。！!？?]*\1[\s,，。！!？?]*\1")
# Emoji modifiers and joiners that may follow an emoji without changing what it means.
_EMOJI_NOISE: Final = frozenset("\ufe0f\u200d\U0001f3fb\U0001f3fc\U0001f3fd\U0001f3fe\U0001f3ff")


def _normalise(text: str) -> str:
    return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()


def _shouting(text: str) -> int:
    """The number of words of a message written mostly in capitals, or 0 when it is not (fewer
    than two real words or eight letters; ids such as ``HL-20260101-0001`` do not count)."""
    words = [w for w in text.split() if not any(c.isdigit() for c in w)]
    letters = [c for w in words for c in w if c.isalpha() and c.isascii()]
    long_words = [w for w in _WORD.findall(" ".join(words)) if len(w) >= 2 and w.isascii()]
    if len(letters) < 8 or len(long_words) < 2:
        return 0
    upper = sum(1 for c in letters if c.isupper())
    return len(long_words) if upper / len(letters) >= 0.8 else 0


# ---- the second classifier ----------------------------------------------------------------------

CLASSIFIER_CUTOFF: Final = 0.5
"""A message the classifier gives at least this probability is frustrated (weighs as a strong cue)."""
_UNSEEN_IDF: Final = 6.0  # the weight, in the vector's length, of an n-gram the table does not keep


def normalise_for_classifier(text: str) -> str:
    """The text as the classifier is trained and applied on: NFKC, whitespace collapsed, case-folded
    (no script conversion: the table has n-grams of both scripts)."""
    return _normalise(text).casefold()


def _char_wb_ngrams(text: str) -> dict[str, int]:
    """scikit-learn's ``char_wb`` 1–4-grams: each word padded with a space on either side."""
    counts: dict[str, int] = {}
    for word in text.split():
        w = f" {word} "
        for n in range(1, 5):
            offset = 0
            gram = w[:n]
            counts[gram] = counts.get(gram, 0) + 1
            while offset + n < len(w):
                offset += 1
                gram = w[offset : offset + n]
                counts[gram] = counts.get(gram, 0) + 1
            if offset == 0:  # a word shorter than n counts once
                break
    return counts


def frustration_probability(text: str) -> float:
    """The second classifier: P(frustrated) by a character n-gram logistic regression trained on the
    NLU data (``bot/frustration_model.py``, generated by ``scripts/train_frustration_model.py``):
    sublinear TF-IDF, L2-normalised, dot the weights, logistic. Pure Python, no file."""
    from bot.frustration_model import FEATURES, INTERCEPT

    z = 0.0
    length = 0.0
    for gram, tf in _char_wb_ngrams(normalise_for_classifier(text)).items():
        x = 1.0 + math.log(tf)
        entry = FEATURES.get(gram)
        if entry is None:
            length += (x * _UNSEEN_IDF) ** 2
            continue
        weight, idf = entry
        value = x * idf
        z += weight * value
        length += value * value
    if length > 0:
        z /= math.sqrt(length)
    return 1.0 / (1.0 + math.exp(-(INTERCEPT + z)))


def _frustration(text: str, folded: str, classifier: bool) -> tuple[float, list[str]]:
    score = 0.0
    cues: list[str] = []
    if classifier and frustration_probability(text) >= CLASSIFIER_CUTOFF:
        score += STRONG_WEIGHT
        cues.append("classifier")
    for rx in _STRONG_RE:
        m = rx.search(folded)
        if m:
            score += STRONG_WEIGHT
            cues.append(f"lexicon:{m.group(0)}")
    for rx in _MILD_RE:
        m = rx.search(folded)
        if m:
            score += MILD_WEIGHT
            cues.append(f"mild:{m.group(0)}")
    emoji = [c for c in text if c in ANGER_EMOJI]
    if emoji:
        meaningful = [
            c for c in text if not c.isspace() and c not in _EMOJI_NOISE and unicodedata.category(c)[0] != "P"
        ]
        if meaningful and all(c in ANGER_EMOJI for c in meaningful):
            score += 1.0
            cues.append("emoji_only")
        else:
            score += sum(EMOJI_WEIGHT / 2 if c in MILD_EMOJI else EMOJI_WEIGHT for c in emoji)
            cues.append("emoji")
    shouting = _shouting(text)
    if shouting:
        # A whole sentence in capitals is shouting; two or three words may be emphasis.
        score += 2 * STYLE_WEIGHT if shouting >= 4 else STYLE_WEIGHT
        cues.append("caps")
    if _BANGS.search(text):
        score += STYLE_WEIGHT
        cues.append("exclamation")
    if _REPEAT.search(folded) or _CJK_REPEAT.search(folded):
        score += STYLE_WEIGHT
        cues.append("repetition")
    return min(1.0, score), cues


# ---- danger -------------------------------------------------------------------------------------

# People a customer may meet through the service: a visit, a delivery, a call.
_STAFF = (
    r"(?:technician|engineer|installer|repair ?man|repairer|worker|contractor|fitter|plumber|electrician|"
    r"courier|driver|delivery (?:man|guy|person|driver)|your (?:guy|man|person|people|colleague)|"
    r"the (?:guy|man|person) (?:who|that|from)|salesman|sales ?person)"
)
_CONTACT = (
    r"(?:messag|text|whatsapp|wechat|dm|follow|watch|touch|star|photo|picture|pic|keeps? call|"
    r"(?:wait|hang)\w* (?:outside|around|near))\w*"
)
DANGER: Final[dict[str, tuple[str, ...]]] = {
    SELF_HARM: (
        r"\bkill(?:ing)? my ?self\b", r"\bsuicid\w*", r"\bend(?:ing)? (?:my|it) (?:life|all)\b", r"\bend it all\b",
        r"\b(?:don'?t|do not) want to (?:live|be alive|exist)\b", r"\bwant(?:ed)? to die\b",
        r"\bwish i (?:was|were) dead\b",
        r"\b(?:hurt|harm|cut)(?:ing)? my ?self\b", r"\bself[- ]?harm\w*", r"\bno reason to live\b",
        r"\bbetter off dead\b", r"\b(?:too many|a lot of|all (?:my|the)|bunch of) (?:pills|tablets|sleeping pills)\b",
        r"\bcan'?t go on\b", r"\b(?:want|wish) (?:it|everything) (?:all )?to end\b", r"安眠[药藥]", r"一了百了",
        r"[撑撐]不下去", r"[顶頂]唔住(?:[啦喇]|了)?.{0,6}(?:死|了[结結]|一了百了)", r"\btake my (?:own )?life\b",
        r"\boverdos\w*",
        r"自[杀殺]", r"[轻輕]生", r"不想活", r"想死", r"活不下去", r"[了][结結](?:自己|生命)", r"跳[楼樓]", r"割腕",
        r"[结結]束(?:自己的?)?生命", r"唔想(?:再)?(?:生存|活|做人)", r"[冇]意思(?:再)?活", r"去死算", r"寻死|尋死",
        r"吃安眠[药藥]|食安眠[药藥]", r"伤害自己|傷害自己",
    ),
    MEDICAL: (
        r"\bheart attack\b", r"\b(?:stopped|isn'?t|is not|not) breathing\b", r"\bbreathing (?:properly|normally)\b",
        r"呼吸(?:不|唔)(?:正常|[顺順])", r"\bcan'?t breathe\b", r"\bcannot breathe\b", r"\bnot breathing\b",
        r"\bchest pains?\b",
        r"\bunconscious\b", r"\bstroke\b", r"\bseizure\b", r"\bbleeding\b", r"\bambulance\b", r"\bmedical emergency\b",
        r"\bpassed out\b", r"\bfainted\b", r"\ballergic reaction\b", r"\bpoison\w*", r"\bcollapsed\b",
        r"\bchok(?:e|ing)\b",
        r"\bfire\b(?! (?:stick|tv|tablet|you|him|her|them|the|your|my|his|this|that))", r"\bsmoke\b", r"\bsmoking\b",
        r"\bgas leak\b",
        r"\belectric shock\b", r"\belectrocut\w*",
        r"救[护護][车車]", r"心[脏臟]病", r"喘不[过過][气氣]", r"呼吸困[难難]", r"[昏][迷]", r"[晕暈]倒", r"[晕暈]低",
        r"流血", r"中毒", r"急救", r"休克", r"抽搐", r"胸口(?:很|好)?(?:痛|疼)", r"白[车車]",
        r"着火|著火|火[灾災]|起火|冒[烟煙]|燒着|烧着",
        r"[没沒冇]有?反[应應]|叫不醒|叫唔醒|倒在地|[瞓躺][咗了]?(?:喺|在)地|倒地",
        r"煤[气氣]泄漏|燃[气氣]泄漏|漏[气氣]", r"触电|觸電", r"[唞]唔到[气氣]|[透]不[过過][气氣]", r"送院|送[医醫]院",
    ),
    VIOLENCE: (
        r"\b(?:hit|hits|hitting|beat|beats|beating|punch\w*|slap\w*|kick(?:s|ed|ing)?|shov\w*|chok\w*|strangl\w*)"
        r" (?:me|us|her|him|them)\b",
        r"\battack\w*", r"\bassault\w*", r"\bweapon\w*", r"\bknife\b", r"\bknives\b", r"\bgun\b", r"\bstab\w*",
        r"\bpushed (?:me|us|her|him)\b", r"\bgrabb?(?:ed|ing)? (?:me|us|her|him|my (?:arm|hand|wrist|neck|hair))\b",
        r"\bhurt (?:me|us|my (?:wife|husband|partner|son|daughter|child|children|kids?|mother|father|mum|mom|dad|"
        r"family))\b",
        r"\bviolen\w*", r"\babus\w*", r"\bbeaten\b", r"\brap(?:e|ed)\b",
        r"打(?:我|人|伤|傷|了我)", r"[殴毆]打", r"[动動]手(?:打|了)|[动動]手[动動]脚|[動动]手[動动]腳", r"家暴",
        r"[刀]", r"[枪槍]",
        r"[砍](?![价價])", r"[伤傷]害(?:我|了我)",
        r"[暴]力", r"[揍]", r"[强強][奸姦]", r"[虐]待",
        r"[扑撲]我|推(?:了|咗)?我|掐我|抓(?:住|着|著)?我|捉(?:住)?我", r"[郁]手|[打]到我",
    ),
    THREAT: (
        r"\bknows? where (?:i|we|my|our|she|he)\b", r"知道我[家屋]",
        # "knows where I live / which school my son goes to": the person or home, then where
        r"知道我住(?:[在喺]|[边邊哪])",
        r"知道我(?:[的个個嘅])?(?:仔|女|孩子|小孩|[儿兒]子|女[儿兒]|老婆|老公|太太|家人|屋企|家|父母|[爸妈媽]|[细細]路)"
        r".{0,4}(?:[在喺]|[读讀]|上[学學]|返工|上班|[边邊]|哪)",
        r"\bthreat\w*", r"\bblackmail\w*", r"\bextort\w*", r"\bkill (?:me|you|us|him|her)\b",
        r"\b(?:frighten|terrif|scar)(?:y|ied|ying|ing|ed)\b", r"\bafraid (?:for|of) (?:my|our|him|her|them|the)\b",
        r"\bin danger\b", r"\bnot safe\b", r"\bunsafe\b", r"\bfear(?:ful)? for\b", r"\bintimidat\w*", r"\bfear\b",
        r"\bscared\b",
        r"威[胁脅]", r"恐[吓嚇]", r"[勒][索]", r"要[杀殺]", r"弄死", r"找人[打]", r"不安全", r"唔安全", r"[吓嚇]人",
        r"[吓嚇][亲親]", r"害怕", r"好[惊驚]", r"可怕", r"[惊驚]慌", r"[杀殺]了?你|[杀殺]了?我", r"有危[险險]",
        r"危[险險]",
        r"[报報][复復]", r"[跟][着著]我",
        # fear in plain words ("I don't dare open the door") and a threat that names
        # where the family is ("knows which school my son goes to")
        r"[不唔]敢(?:[开開])?[门門]", r"[不唔]敢出[门門]", r"[不唔]敢[返回](?:家|屋企)",
    ),
    HARASSMENT: (
        r"\bharass\w*", r"\bstalk\w*", r"\bcreep\w*", r"\bfollow(?:ing|ed|s)? me\b", r"\bwon'?t leave me alone\b",
        r"\binappropriate\b", r"\bsexual\w*", r"\bunwanted\b", r"\bperv\w*", r"\bobsess\w*",
        r"\bkeeps? (?:calling|texting|messaging|coming|showing|waiting)\b",
        rf"\b{_STAFF}\b.{{0,80}}\b{_CONTACT}\b.{{0,20}}\b(?:me|my|us|our)\b",
        r"\b(?:came|come|been|was|visited) (?:to|at) (?:my|our) (?:home|house|flat|apartment|place|door)\b.{0,120}"
        r"\b(?:messag|text|call|wechat|whatsapp|send)\w*",
        r"[骚騷][扰擾]", r"跟[踪蹤]", r"尾[随隨]", r"偷拍", r"[纠糾][缠纏]", r"[猥][亵褻]", r"不[怀懷]好意",
        r"(?:一直|不停|天天|老是|成日|不斷|不断|每日|每天)(?:[给給]我|同我|向我|找我)(?:[发發]|打|send|call|[传傳]|whatsapp)",
        r"(?:半夜|深夜|三更半夜)(?:.{0,6})(?:[发發]|[传傳]|打|call|send|whatsapp)"
        r"(?=.{0,6}(?:我|[讯訊]息|信息|短信|消息|[电電][话話]|微信|message|whatsapp))",
        r"(?:[楼樓]下|[门門]口|公司|屋企|家)(?:.{0,3})等我",
        r"(?:上[门門]|来我家|來我家|到我家|嚟我屋企|上[过過]门|上[過过]門).{0,40}(?:[师師]傅|[员員]|[人]|[佢他她]).{0,40}"
        r"(?:[发發]|打|加|找|[约約]|[吓嚇]|短信|信息|[讯訊]息|微信|whatsapp|message)",
        r"(?:[师師]傅|工作人[员員]|[维維]修[员員工]|安装[员工]|安裝[員工]|快[递遞][员員]|技[术術][员員]|送[货貨][员員]|[职職][员員]).{0,40}"
        r"(?:加(?:咗|了)?我|[约約]我|找我|[奇]怪|相片|[发發](?:了)?(?:很多|好多|一堆)?(?:[短]信|信息|[讯訊]息|消息|微信|照片|[图圖]片)|打[电電][话話]|send|call|[跟][着著])",
        r"[变變]态|[變变]態|鹹濕|咸湿",
    ),
}
_DANGER_RE: Final = {kind: [re.compile(p) for p in patterns] for kind, patterns in DANGER.items()}


def _danger(folded: str) -> tuple[str | None, list[str]]:
    for kind in DANGER_KINDS:
        for rx in _DANGER_RE[kind]:
            m = rx.search(folded)
            if m:
                return kind, [f"danger:{kind}:{m.group(0)[:40]}"]
    return None, []


def read_signals(text: str, *, classifier: bool = True) -> Signals:
    """The frustration score and the danger category of one customer message.

    Args:
        text: The message as the customer wrote it (any script; emoji included).
        classifier: Also consult the second classifier (:func:`frustration_probability`); off, the
            lexicon alone decides (for measuring one against the other).

    Returns:
        :class:`Signals`. An empty or blank message gives ``Signals()``.
    """
    norm = _normalise(text)
    if not norm:
        return Signals()
    folded = norm.casefold()
    frustration, cues = _frustration(norm, folded, classifier)
    danger, danger_cues = _danger(folded)
    return Signals(frustration=round(frustration, 3), danger=danger, cues=tuple(cues + danger_cues))

"""The label set, its aliases, and turning a model's free-text answer into a label."""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from erckit.data import DataError

LABELS: tuple[str, ...] = ("Disgust", "Anger", "Sad", "Happy", "Neutral", "Surprise", "Fear")

# Chinese display names, used by plots and by templates that answer in Chinese.
CHINESE_NAMES: dict[str, str] = {
    "Disgust": "厌恶",
    "Anger": "愤怒",
    "Sad": "悲伤",
    "Happy": "高兴",
    "Neutral": "中性",
    "Surprise": "惊讶",
    "Fear": "恐惧",
}

# Characters written differently in Simplified and Traditional Chinese, position for position: common ones
# (they tell the script of a text) and those of the label words (they make the Traditional label words).
_SIMPLIFIED = "们这说个来时会对为过还没么样后点见问让车东开关门电话钱长请买书头发现实学听亲爱欢谢难边觉应该两无与经给吗语认识记师饭气岁妈谁"
_TRADITIONAL = "們這說個來時會對為過還沒麼樣後點見問讓車東開關門電話錢長請買書頭發現實學聽親愛歡謝難邊覺應該兩無與經給嗎語認識記師飯氣歲媽誰"
_TO_TRADITIONAL = str.maketrans(_SIMPLIFIED + "厌恶讨愤恼伤兴乐悦静惊讶惧担", _TRADITIONAL + "厭惡討憤惱傷興樂悅靜驚訝懼擔")

TRADITIONAL_CHINESE_NAMES: dict[str, str] = {label: name.translate(_TO_TRADITIONAL) for label, name in CHINESE_NAMES.items()}


def mostly_chinese(texts: list[str]) -> bool:
    """Whether at least half of `texts` hold CJK characters (no texts: True, erckit's first language)."""
    return 2 * sum(any("\u4e00" <= ch <= "\u9fff" for ch in text) for text in texts) >= len(texts)


def display_names(texts: Iterable[str]) -> dict[str, str] | None:
    """Label names in the script of `texts`: Simplified or Traditional Chinese when most texts hold CJK
    characters (Traditional when its distinctive characters outnumber the Simplified ones), else None
    (English: the label names themselves)."""
    texts = list(texts)
    if not texts or not mostly_chinese(texts):
        return None
    joined = "".join(texts)
    traditional = sum(joined.count(ch) for ch in _TRADITIONAL)
    simplified = sum(joined.count(ch) for ch in _SIMPLIFIED)
    return TRADITIONAL_CHINESE_NAMES if traditional > simplified else CHINESE_NAMES


# MELD's own label words, used when writing labels back into a MELD-style CSV.
MELD_NAMES: dict[str, str] = {
    "Disgust": "disgust",
    "Anger": "anger",
    "Sad": "sadness",
    "Happy": "joy",
    "Neutral": "neutral",
    "Surprise": "surprise",
    "Fear": "fear",
}

_ALIASES: dict[str, tuple[str, ...]] = {
    "Disgust": ("disgust", "disgusted", "disgusting", "厌恶", "恶心", "讨厌", "反感", "噁心"),  # 噁心: Traditional's usual form
    "Anger": ("anger", "angry", "mad", "annoyed", "愤怒", "生气", "气愤", "恼怒"),
    "Sad": ("sad", "sadness", "sorrow", "悲伤", "伤心", "难过", "悲哀"),
    "Happy": ("happy", "happiness", "joy", "joyful", "高兴", "快乐", "开心", "喜悦"),
    "Neutral": ("neutral", "中性", "中立", "平静"),
    "Surprise": ("surprise", "surprised", "surprising", "惊讶", "吃惊", "惊奇", "震惊"),
    "Fear": ("fear", "fearful", "scared", "afraid", "恐惧", "害怕", "担心", "恐慌"),
}

ALIASES: dict[str, str] = {form: label for label, names in _ALIASES.items() for alias in names
                           for form in (alias, alias.translate(_TO_TRADITIONAL))}  # each also in Traditional

_STRIP = " \t\r\n.,;:!?。，；：！？、\"'“”‘’<>《》()（）[]【】「」『』*`"
_ENGLISH_ALIASES = sorted((a for a in ALIASES if a.isascii()), key=len, reverse=True)
_CHINESE_ALIASES = sorted((a for a in ALIASES if not a.isascii()), key=len, reverse=True)
_ENGLISH_PATTERN = re.compile(r"\b(" + "|".join(_ENGLISH_ALIASES) + r")\b", re.IGNORECASE)


_NEGATED = re.compile(  # a label word right after it is denied: 不高兴, 不太高兴, 没有惊讶, not happy, not at all happy
    r"(?:\b(?:not|never|no|isn't|aren't|wasn't|weren't|don't|doesn't|didn't)\s+(?:at\s+all\s+|very\s+|so\s+|really\s+|"
    r"that\s+|feeling\s+|feel\s+)?|(?:不是|没有|沒有|[不没沒])(?:太|很|大|怎么|怎麼|那么|那麼|算|是很|感到|觉得|覺得)?)$",
    re.IGNORECASE)


def normalize_label(value: str) -> str | None:
    """The canonical label for a label word or alias (case-insensitive; full-width forms such as Ｈａｐｐｙ
    read as their ASCII), else None."""
    key = unicodedata.normalize("NFKC", value).strip(_STRIP).lower()
    return ALIASES.get(key)


def read_label(raw: object, path: str | Path, where: str) -> str | None:
    """A label as a file gives it: None where it gives none (missing, null or blank), the label of a label
    word or alias; anything else refused naming it. How every reader of labels (the dialogue files,
    predictions.jsonl) takes one."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    label = normalize_label(raw) if isinstance(raw, str) else None
    if label is None:
        raise DataError(path, where, f"unknown label {raw!r} (expected one of {', '.join(LABELS)}, or an alias)")
    return label


NOT_YET_LABELLED = ("?", "-", "tbd", "todo", "n/a", "unknown", "unlabelled", "unlabeled", "待定", "未标注", "未知")
"""What a dialogue file being labelled may hold where a label is still to come (in any case): no label."""


def not_yet_labelled(raw: object) -> bool:
    """Whether a dialogue file's label cell says "no label yet": blank, or one of NOT_YET_LABELLED."""
    return raw is None or isinstance(raw, str) and unicodedata.normalize("NFKC", raw).strip().lower() in (
        "", *NOT_YET_LABELLED)


def read_gold_label(raw: object, path: str | Path, where: str) -> str | None:
    """A dialogue file's label (`read_label`), None where it says "no label yet" (`not_yet_labelled`); the
    dialogue readers' rule (predictions.jsonl keeps `read_label`'s: a prediction always names a label)."""
    return None if not_yet_labelled(raw) else read_label(raw, path, where)


def parse_answer(answer: str | None) -> str | None:
    """The label a model's free-text answer names, or None when it names none or several.

    An exact label word (punctuation and case ignored) wins; otherwise the answer is searched for
    label words (English as whole words, Chinese as substrings) and accepted only if exactly one
    label is named and no label word is denied (不高兴, not happy).
    """
    if not answer:
        return None
    exact = normalize_label(answer)
    if exact is not None:
        return exact
    answer = unicodedata.normalize("NFKC", answer).replace("\u2019", "'")  # isn’t: a typographic apostrophe
    mentions = [(m.start(1), ALIASES[m.group(1).lower()]) for m in _ENGLISH_PATTERN.finditer(answer)]
    rest = answer
    for alias in _CHINESE_ALIASES:  # longest first, so a longer word is not counted twice
        for m in re.finditer(re.escape(alias), rest):
            mentions.append((m.start(), ALIASES[alias]))
        rest = rest.replace(alias, " " * len(alias))  # same length: later positions stay true
    if any(_NEGATED.search(answer[:start]) for start, _ in mentions):
        return None  # a denied label word (不高兴): which label is meant is not said
    found = {label for _, label in mentions}
    return found.pop() if len(found) == 1 else None


def class_weights(labels: Iterable[str], power: float) -> dict[str, float]:
    """Loss weight per label ∝ (1 / frequency) ** power, scaled so the average example weighs 1.

    A label that never occurs counts as seen once; power 0 weighs every label 1.
    """
    counts = Counter(labels)
    freq = {label: max(counts[label], 1) for label in LABELS}
    total = sum(freq.values())
    raw = {label: (total / f) ** power for label, f in freq.items()}
    scale = total / sum(raw[label] * freq[label] for label in LABELS)
    return {label: raw[label] * scale for label in LABELS}

"""The label set, its aliases, and turning a model's free-text answer into a label."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

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
    "Disgust": ("disgust", "disgusted", "disgusting", "厌恶", "恶心", "讨厌", "反感"),
    "Anger": ("anger", "angry", "mad", "annoyed", "愤怒", "生气", "气愤", "恼怒"),
    "Sad": ("sad", "sadness", "sorrow", "悲伤", "伤心", "难过", "悲哀"),
    "Happy": ("happy", "happiness", "joy", "joyful", "高兴", "快乐", "开心", "喜悦"),
    "Neutral": ("neutral", "中性", "中立", "平静"),
    "Surprise": ("surprise", "surprised", "surprising", "惊讶", "吃惊", "惊奇", "震惊"),
    "Fear": ("fear", "fearful", "scared", "afraid", "恐惧", "害怕", "担心", "恐慌"),
}

ALIASES: dict[str, str] = {alias: label for label, names in _ALIASES.items() for alias in names}

_STRIP = " \t\r\n.,;:!?。，；：！？、\"'“”‘’<>《》()（）[]【】*`"
_ENGLISH_ALIASES = sorted((a for a in ALIASES if a.isascii()), key=len, reverse=True)
_CHINESE_ALIASES = sorted((a for a in ALIASES if not a.isascii()), key=len, reverse=True)
_ENGLISH_PATTERN = re.compile(r"\b(" + "|".join(_ENGLISH_ALIASES) + r")\b", re.IGNORECASE)


def normalize_label(value: str) -> str | None:
    """The canonical label for a label word or alias (case-insensitive), else None."""
    key = value.strip(_STRIP).lower()
    return ALIASES.get(key)


def parse_answer(answer: str | None) -> str | None:
    """The label a model's free-text answer names, or None when it names none or several.

    An exact label word (punctuation and case ignored) wins; otherwise the answer is searched for
    label words (English as whole words, Chinese as substrings) and accepted only if exactly one
    label is named.
    """
    if not answer:
        return None
    exact = normalize_label(answer)
    if exact is not None:
        return exact
    found = {ALIASES[m.group(1).lower()] for m in _ENGLISH_PATTERN.finditer(answer)}
    rest = answer
    for alias in _CHINESE_ALIASES:  # longest first, so a longer word is not counted twice
        if alias in rest:
            found.add(ALIASES[alias])
            rest = rest.replace(alias, " ")
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

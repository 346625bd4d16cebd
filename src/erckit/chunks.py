"""Overlapping chunks of a dialogue too long for one model input, each utterance labelled in exactly one.

Used wherever a dialogue goes through a model whole: the dialogue-reading encoder (`encoder.context:
dialogue`) and the LLM's dialogue form (`erckit.llm.dialogue_form`).
"""

from __future__ import annotations

from collections.abc import Sequence


def chunks(lengths: Sequence[int], budget: int, placement: str = "centered") -> list[tuple[int, int, int, int]]:
    """(start, end, core start, core end) of overlapping turn ranges of at most `budget` tokens, for turns of
    `lengths` tokens.

    Each utterance is labelled in exactly one chunk (its core), with up to a quarter of the budget of turns
    before the core and a quarter after it (`centered`), or up to half the budget before it (`past`: a
    question sees no later turn; `erckit.prompts.PLACEMENTS`). A dialogue that fits is one chunk; a single
    turn longer than the budget is a chunk of its own.
    """
    n, margin, result, core_start = len(lengths), budget // 4, [], 0
    context_before = margin if placement == "centered" else budget // 2
    while core_start < n:
        start, before = core_start, 0
        while start > 0 and before + lengths[start - 1] <= context_before:
            start -= 1
            before += lengths[start]
        end, total = start, 0
        while end < n and total + lengths[end] <= budget:
            total += lengths[end]
            end += 1
        if end <= core_start:  # the core's first turn does not fit beside its context: alone
            start, end = core_start, core_start + 1
        core_end, after = end, 0
        if placement == "centered" and end < n:
            while core_end - 1 > core_start and after + lengths[core_end - 1] <= margin:
                core_end -= 1
                after += lengths[core_end]
        result.append((start, end, core_start, core_end))
        core_start = core_end
    return result

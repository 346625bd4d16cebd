"""A long dialogue cut into overlapping chunks (`erckit.chunks`), the one rule of the dialogue-reading
encoder and the LLM's dialogue form."""

from __future__ import annotations

import random

import pytest

from erckit.chunks import chunks


@pytest.mark.parametrize("placement", ["centered", "past"])
def test_chunks_label_every_utterance_once_with_context(placement: str) -> None:
    lengths = [5, 9, 3, 7, 4, 8, 6, 2, 9, 5, 40, 3]
    for start, end, core_start, core_end in (found := chunks(lengths, 30, placement)):
        assert start <= core_start < core_end <= end
        assert sum(lengths[start:end]) <= 30 or end - start == 1  # a 40-token turn alone
    cores = [i for _, _, a, b in found for i in range(a, b)]
    assert cores == list(range(len(lengths)))  # each utterance labelled exactly once, in order
    assert len(found) > 2
    if placement == "centered":  # cores before the 40-token turn have turns after them as context
        assert all(end > core_end for _, end, _, core_end in found[:3])
    else:  # a past-only question never needs the turns after its utterance
        assert all(end == core_end for _, end, _, core_end in found)
    assert all(start < core_start for start, _, core_start, _ in found[1:3])  # and turns before them
    assert chunks(lengths[:3], 30, placement) == [(0, 3, 0, 3)]


@pytest.mark.parametrize("seed", range(200))
@pytest.mark.parametrize("placement", ["centered", "past"])
def test_chunks_fit_the_budget_and_take_all_the_context_the_rule_allows(seed, placement):
    rng = random.Random(seed)
    budget = rng.randint(40, 200)
    lengths = [rng.randint(1, budget // 4) for _ in range(rng.randint(1, 40))]
    found = chunks(lengths, budget, placement)
    assert [i for _, _, core, core_end in found for i in range(core, core_end)] == list(range(len(lengths)))
    quarter, before = budget // 4, budget // 4 if placement == "centered" else budget // 2
    for start, end, core, core_end in found:
        assert start <= core < core_end <= end and sum(lengths[start:end]) <= budget
        # earlier turns before the core: as many as fit in its share of the budget
        assert sum(lengths[start:core]) <= before and (start == 0 or sum(lengths[start - 1 : core]) > before)
        if placement == "past":
            assert end == core_end
        elif end < len(lengths) and core_end - core > 1:  # later turns after the core: a quarter, no more
            assert sum(lengths[core_end:end]) <= quarter < sum(lengths[core_end - 1 : end])
    if sum(lengths) <= budget:
        assert found == [(0, len(lengths), 0, len(lengths))]

"""Packing a tree of token segments into one sequence, each segment seeing only its ancestors and itself.

The dialogue form labels every utterance of a dialogue from one sequence: the dialogue is one
segment, each utterance's question a child of it, each candidate answer a child of its question.
A token attends to the tokens of its own segment before it and to every token of the segments
above it, never to a sibling: so every label is computed exactly as in a separate sequence holding
the dialogue and that one question (and answer), and no label is conditioned on another.

Position ids continue from the end of the parent chain, as in that separate sequence. The mask is
additive (0 where allowed, the dtype's minimum elsewhere) of shape [batch, 1, length, length],
which transformers' models use as given; models with sliding-window layers (Gemma 3) get one mask
per layer type, the sliding one limited by position distance, as the separate sequence would be.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Segment:
    """Token ids and the index of the parent segment (None for a root); parents come before children."""

    ids: list[int]
    parent: int | None = None


@dataclass(frozen=True)
class Packed:
    """One packed sequence: ids, position ids, segment of every token, and where each segment starts."""

    ids: list[int]
    positions: list[int]
    segment_of: list[int]
    starts: list[int]
    ancestors: list[frozenset[int]]  # per segment: itself and all segments above it

    def last_position(self, segment: int, segments: Sequence[Segment]) -> int:
        """Index in the packed sequence of the last token of `segment` (it predicts a child's first token)."""
        return self.starts[segment] + len(segments[segment].ids) - 1


def pack(segments: Sequence[Segment]) -> Packed:
    """Lay the segments out in order; positions continue from each segment's parent chain."""
    ids: list[int] = []
    positions: list[int] = []
    segment_of: list[int] = []
    starts: list[int] = []
    ends: list[int] = []  # the position after each segment's last token
    ancestors: list[frozenset[int]] = []
    for index, segment in enumerate(segments):
        parent = segment.parent
        if parent is not None and not 0 <= parent < index:
            raise ValueError(f"segment {index}: its parent {parent} must come before it")
        if not segment.ids:
            raise ValueError(f"segment {index} has no tokens")
        first = ends[parent] if parent is not None else 0
        starts.append(len(ids))
        ids.extend(segment.ids)
        positions.extend(range(first, first + len(segment.ids)))
        segment_of.extend([index] * len(segment.ids))
        ends.append(first + len(segment.ids))
        ancestors.append(frozenset({index}) | (ancestors[parent] if parent is not None else frozenset()))
    return Packed(ids, positions, segment_of, starts, ancestors)


def visibility(packed: Packed) -> torch.Tensor:
    """[L, L] bool: token q may attend to token k (k in an ancestor segment of q's, or earlier in q's own)."""
    segment_of = torch.tensor(packed.segment_of)
    count = len(packed.ancestors)
    is_ancestor = torch.zeros((count, count), dtype=torch.bool)  # [segment of q, segment of k]
    for segment, above in enumerate(packed.ancestors):
        is_ancestor[segment, list(above)] = True
    allowed = is_ancestor[segment_of[:, None], segment_of[None, :]]
    index = torch.arange(len(packed.ids))
    same = segment_of[:, None] == segment_of[None, :]
    return allowed & (~same | (index[None, :] <= index[:, None]))


def sliding_window_of(config) -> int | None:
    """The sliding window of a model whose layers include sliding-window attention, else None."""
    layer_types = getattr(config, "layer_types", None) or []
    window = getattr(config, "sliding_window", None)
    return window if window and "sliding_attention" in layer_types else None


def batch(
    packs: Sequence[Packed], pad_id: int, dtype: torch.dtype, device, sliding_window: int | None = None
) -> dict:
    """Model inputs for packed sequences, right-padded: input_ids, position_ids and the attention mask.

    Padding tokens see only themselves (no row is fully masked). With `sliding_window`, the mask is a
    dict by layer type, the sliding one also requiring a position distance below the window.
    """
    width = max(len(p.ids) for p in packs)
    ids = torch.full((len(packs), width), pad_id, dtype=torch.long)
    positions = torch.zeros((len(packs), width), dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(len(packs), 1, 1)
    for row, packed in enumerate(packs):
        n = len(packed.ids)
        ids[row, :n] = torch.tensor(packed.ids)
        positions[row, :n] = torch.tensor(packed.positions)
        allowed[row, :n, :n] = visibility(packed)
    inputs = {"input_ids": ids.to(device), "position_ids": positions.to(device)}
    full = additive(allowed, dtype).to(device)
    if sliding_window is None:
        inputs["attention_mask"] = full
        return inputs
    near = (positions[:, :, None] - positions[:, None, :]) < sliding_window
    sliding = additive(allowed & (near | torch.eye(width, dtype=torch.bool)), dtype).to(device)
    inputs["attention_mask"] = {"full_attention": full, "sliding_attention": sliding}
    return inputs


def additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """[B, L, L] bool → [B, 1, L, L] additive mask: 0 where allowed, the dtype's minimum elsewhere."""
    mask = torch.zeros(allowed.shape, dtype=dtype)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]

"""Training in the dialogue form: packed rows of whole dialogues, their collation and the answer loss.

A row holds several dialogues' trees (`erckit.llm.dialogue_form`) packed up to a token budget; each
question's gold answer is the target, weighted by its class weight. `collate` rebuilds each row's tree
mask, and `packed_answer_loss` computes vocabulary logits at the answer positions only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from erckit.data import Dialogue
from erckit.llm.chat import ChatTemplate
from erckit.llm.dialogue_form import answer_targets, dialogue_trees, merge_trees, token_budget_groups
from erckit.llm.packing import Segment, batch, pack
from erckit.llm.scoring import forward_parameters
from erckit.prompts import PromptConfig


def training_rows(
    dialogues: Sequence[Dialogue],
    tokenizer,
    template: ChatTemplate,
    config: PromptConfig,
    max_tokens: int,
    *,
    max_length: int | None = None,
    class_weights: dict[str, float] | None = None,
) -> list[dict]:
    """Packed training rows of whole dialogues (or chunks of long ones), up to `max_tokens` each.

    A row holds the token ids, position ids, the segment of each token and each segment's parent
    (from which `collate` rebuilds the mask), and per position the answer token it must predict
    (-100 elsewhere) with its loss weight (the gold label's class weight, 1 without weights).
    """
    trees, labels = [], []
    for dialogue in dialogues:
        for tree in dialogue_trees(dialogue, tokenizer, template, config, gold=True, max_length=max_length):
            trees.append(tree)
            labels.append([dialogue.utterances[i].label for i in tree.utterances])
    lengths = [sum(len(s.ids) for s in tree.segments) for tree in trees]
    rows = []
    for group in token_budget_groups(lengths, max_tokens):
        segments, offsets = merge_trees([trees[i] for i in group])
        packed = pack(segments)
        targets = [-100] * len(packed.ids)
        weights = [0.0] * len(packed.ids)
        for i, offset in zip(group, offsets):
            for n, question in enumerate(trees[i].questions):
                weight = class_weights[labels[i][n]] if class_weights else 1.0
                answer = offset + trees[i].answers[n][0]
                for index, token in answer_targets(packed, segments, offset + question, answer):
                    targets[index], weights[index] = token, weight
        rows.append({
            "input_ids": packed.ids, "position_ids": packed.positions, "segment_of": packed.segment_of,
            "parents": [-1 if s.parent is None else s.parent for s in segments],
            "targets": targets, "weights": weights,
        })
    return rows


def collate(rows: Sequence[dict], pad_id: int, dtype: torch.dtype, sliding_window: int | None = None) -> dict:
    """A batch of training rows: model inputs with their masks, and `targets` / `weights` (right-padded)."""
    packs = [
        pack([Segment(row["input_ids"][start:end], None if parent < 0 else parent)
              for (start, end), parent in zip(_spans(row["segment_of"]), row["parents"])])
        for row in rows
    ]
    inputs = batch(packs, pad_id, dtype, "cpu", sliding_window)
    width = inputs["input_ids"].shape[1]
    inputs["targets"] = torch.tensor([row["targets"] + [-100] * (width - len(row["targets"])) for row in rows])
    inputs["weights"] = torch.tensor([row["weights"] + [0.0] * (width - len(row["weights"])) for row in rows])
    return inputs


def _spans(segment_of: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each segment in a packed row (segments are contiguous and in order)."""
    spans: list[tuple[int, int]] = []
    for index, segment in enumerate(segment_of):
        if segment == len(spans):
            spans.append((index, index + 1))
        else:
            spans[-1] = (spans[-1][0], index + 1)
    return spans


def packed_answer_loss(model, inputs: dict) -> torch.Tensor:
    """Weighted mean cross-entropy of the answer tokens; vocabulary logits only at answer positions."""
    targets, weights = inputs["targets"], inputs["weights"]
    needed = (targets != -100).any(dim=0).nonzero().squeeze(-1)
    kwargs = {k: inputs[k] for k in ("input_ids", "position_ids", "attention_mask")}
    if "logits_to_keep" in forward_parameters(model):
        logits = model(**kwargs, logits_to_keep=needed).logits.float()
    else:
        logits = model(**kwargs).logits[:, needed].float()
    chosen = targets[:, needed]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), chosen.reshape(-1), ignore_index=-100, reduction="none"
    )
    weight = weights[:, needed].reshape(-1)
    return (losses * weight).sum() / weight.sum().clamp(min=1e-12)

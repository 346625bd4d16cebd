"""The dialogue form: every utterance of a dialogue labelled from one packed sequence.

The instruction and the dialogue are written once; each utterance's short question (and, when
scoring, each of the 7 candidate answers) is a segment that sees the dialogue and itself only
(`packing`). The centred placement lets every question see the whole dialogue, past and future;
`past` lets the question of utterance i see the turns up to i (live use). Several dialogues share a
packed row up to a token budget: they never see each other, so a row is one forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from erckit.data import Dialogue
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate, answer_text
from erckit.llm.packing import Packed, Segment, batch, pack, sliding_window_of
from erckit.llm.scoring import forward_parameters
from erckit.prompts import PromptConfig, dialogue_prompt


@dataclass(frozen=True)
class DialogueTree:
    """A dialogue's segments: question segment per utterance, and per question its answer segments."""

    segments: list[Segment]
    questions: list[int]
    answers: list[list[int]]


def _ids(tokenizer, text: str, special: bool) -> list[int]:
    ids = list(tokenizer(text, add_special_tokens=special)["input_ids"])
    if special and tokenizer.eos_token_id is not None and ids and ids[-1] == tokenizer.eos_token_id:
        ids = ids[:-1]  # some tokenizers append EOS to every text
    return ids


def dialogue_tree(
    dialogue: Dialogue, tokenizer, template: ChatTemplate, config: PromptConfig, answers: Sequence[str]
) -> DialogueTree:
    """Root (chat prefix + instruction), one segment per turn (chained), one question per utterance and
    its candidate answers (label word + the template's closing marker), each under its question."""
    prompt = dialogue_prompt(dialogue, config)
    segments = [Segment(_ids(tokenizer, template.prefix + prompt.intro, special=True))]
    for turn in prompt.turns:
        segments.append(Segment(_ids(tokenizer, turn, special=False), len(segments) - 1))
    last_turn = len(segments) - 1
    answer_ids = [_ids(tokenizer, answer_text(template, a, tokenizer), special=False) for a in answers]
    questions, answer_segments = [], []
    for i, question in enumerate(prompt.questions):
        parent = last_turn if config.placement == "centered" else i + 1
        questions.append(len(segments))
        segments.append(Segment(_ids(tokenizer, question + template.suffix, special=False), parent))
        answer_segments.append([])
        for ids in answer_ids:
            answer_segments[-1].append(len(segments))
            segments.append(Segment(ids, questions[-1]))
    return DialogueTree(segments, questions, answer_segments)


def training_tree(dialogue: Dialogue, tokenizer, template: ChatTemplate, config: PromptConfig) -> DialogueTree:
    """The tree of a labelled dialogue with each question followed by its gold answer only."""
    tree = dialogue_tree(dialogue, tokenizer, template, config, answers=())
    segments = list(tree.segments)
    answers = []
    for question, utterance in zip(tree.questions, dialogue.utterances):
        if utterance.label is None:
            raise ValueError(f"utterance {utterance.id} has no label to train on")
        ids = _ids(tokenizer, answer_text(template, utterance.label, tokenizer), special=False)
        answers.append([len(segments)])
        segments.append(Segment(ids, question))
    return DialogueTree(segments, tree.questions, answers)


def training_rows(
    dialogues: Sequence[Dialogue],
    tokenizer,
    template: ChatTemplate,
    config: PromptConfig,
    max_tokens: int,
    class_weights: dict[str, float] | None = None,
) -> list[dict]:
    """Packed training rows of whole dialogues, up to `max_tokens` each.

    A row holds the token ids, position ids, the segment of each token and each segment's parent
    (from which `collate` rebuilds the mask), and per position the answer token it must predict
    (-100 elsewhere) with its loss weight (the gold label's class weight, 1 without weights).
    """
    trees = [training_tree(d, tokenizer, template, config) for d in dialogues]
    lengths = [sum(len(s.ids) for s in tree.segments) for tree in trees]
    rows = []
    for group in token_budget_groups(lengths, max_tokens):
        segments, offsets = merge_trees([trees[i] for i in group])
        packed = pack(segments)
        targets = [-100] * len(packed.ids)
        weights = [0.0] * len(packed.ids)
        for i, offset in zip(group, offsets):
            for n, question in enumerate(trees[i].questions):
                weight = class_weights[dialogues[i].utterances[n].label] if class_weights else 1.0
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


def merge_trees(trees: Sequence[DialogueTree]) -> tuple[list[Segment], list[int]]:
    """The segments of several trees in one list (parents renumbered); the offset of each tree."""
    segments: list[Segment] = []
    offsets = []
    for tree in trees:
        offsets.append(len(segments))
        segments.extend(
            Segment(s.ids, None if s.parent is None else s.parent + offsets[-1]) for s in tree.segments
        )
    return segments, offsets


def token_budget_groups(lengths: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive items grouped so each group's total length stays within `budget` (one item may exceed it)."""
    groups: list[list[int]] = []
    total = 0
    for index, length in enumerate(lengths):
        if groups and total + length <= budget:
            groups[-1].append(index)
            total += length
        else:
            groups.append([index])
            total = length
    return groups


def answer_targets(packed: Packed, segments: Sequence[Segment], question: int, answer: int) -> list[tuple[int, int]]:
    """(packed index whose logits predict it, token id) for every token of an answer segment."""
    ids = segments[answer].ids
    first = packed.last_position(question, segments)
    start = packed.starts[answer]
    return [(first if j == 0 else start + j - 1, token) for j, token in enumerate(ids)]


@torch.no_grad()
def dialogue_log_probs(
    model,
    tokenizer,
    dialogues: Sequence[Dialogue],
    template: ChatTemplate,
    config: PromptConfig,
    *,
    answers: Sequence[str] = LABELS,
    max_tokens: int = 2048,
    progress: bool = True,
) -> np.ndarray:
    """[utterances, answers] log p(answer | dialogue, question), utterances in dialogue order."""
    trees = [dialogue_tree(d, tokenizer, template, config, answers) for d in dialogues]
    rows: list[np.ndarray] = []
    accepts = forward_parameters(model)
    window = sliding_window_of(model.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dtype = next(model.parameters()).dtype
    lengths = [sum(len(s.ids) for s in tree.segments) for tree in trees]
    bar = tqdm(total=sum(len(d) for d in dialogues), unit="utt", desc="scoring", disable=not progress)
    for group in token_budget_groups(lengths, max_tokens):
        segments, offsets = merge_trees([trees[i] for i in group])
        packed = pack(segments)
        targets = [
            [
                answer_targets(packed, segments, offset + q, offset + a)
                for a in tree.answers[n]
            ]
            for tree, offset in ((trees[i], off) for i, off in zip(group, offsets))
            for n, q in enumerate(tree.questions)
        ]
        needed = sorted({index for utterance in targets for answer in utterance for index, _ in answer})
        column = {index: k for k, index in enumerate(needed)}
        inputs = batch([packed], pad_id, dtype, model.device, window)
        if "logits_to_keep" in accepts:
            inputs["logits_to_keep"] = torch.tensor(needed, device=model.device)
            logits = model(**inputs).logits[0].float()
        else:
            logits = model(**inputs).logits[0, needed].float()
        log_probs = torch.log_softmax(logits, dim=-1)
        for utterance in targets:
            rows.append(
                np.array([sum(float(log_probs[column[i], t]) for i, t in answer) for answer in utterance])
            )
        bar.update(sum(len(dialogues[i]) for i in group))
    bar.close()
    return np.stack(rows) if rows else np.zeros((0, len(answers)))

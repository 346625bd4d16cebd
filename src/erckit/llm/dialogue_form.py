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

from erckit.chunks import chunks
from erckit.data import Dialogue
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate, answer_text, encode_text
from erckit.llm.packing import Packed, Segment, batch, pack, sliding_window_of
from erckit.llm.scoring import forward_parameters
from erckit.progress import bar as progress_bar
from erckit.prompts import DialoguePrompt, PromptConfig, dialogue_prompt


@dataclass(frozen=True)
class DialogueTree:
    """Segments of (a chunk of) a dialogue: the utterances it labels, their question segments, and per
    question its answer segments (the 7 candidates when scoring, the gold one when training)."""

    segments: list[Segment]
    utterances: list[int]
    questions: list[int]
    answers: list[list[int]]


def dialogue_trees(
    dialogue: Dialogue,
    tokenizer,
    template: ChatTemplate,
    config: PromptConfig,
    answers: Sequence[str] = LABELS,
    *,
    gold: bool = False,
    max_length: int | None = None,
    prompt: DialoguePrompt | None = None,
) -> list[DialogueTree]:
    """The trees of a dialogue: root (chat prefix + instruction), one segment per turn (chained), one
    question per utterance and its answers (label word + the template's closing marker).

    With `gold`, each question gets the utterance's gold label as its only answer. With `max_length`,
    a dialogue whose longest chain (root + turns + question + answer) exceeds it is cut into
    overlapping chunks (`chunks`); a turn longer than the room left keeps its first tokens, and so does a
    question longer than a quarter of `max_length` (a quoted one; its closing marker kept). `prompt`:
    other texts for the same dialogue (default: `dialogue_prompt(dialogue, config)`).
    """
    prompt = prompt or dialogue_prompt(dialogue, config)
    root = encode_text(tokenizer, template.prefix + prompt.intro, special=True)
    turns = [encode_text(tokenizer, turn, special=False) for turn in prompt.turns]
    questions = [encode_text(tokenizer, q + template.suffix, special=False) for q in prompt.questions]
    if max_length and max(len(q) for q in questions) > max_length // 4:
        cap, suffix = max_length // 4, encode_text(tokenizer, template.suffix, special=False)
        questions = [q if len(q) <= cap else q[: max(cap - len(suffix), 1)] + suffix for q in questions]
    if gold:
        missing = [u.id for u in dialogue.utterances if u.label is None]
        if missing:
            raise ValueError(f"utterance {missing[0]} has no label to train on")
        answers = sorted({u.label for u in dialogue.utterances})
    answer_ids = {a: encode_text(tokenizer, answer_text(template, a, tokenizer), special=False) for a in answers}
    longest_tail = max(len(q) for q in questions) + max((len(a) for a in answer_ids.values()), default=0)
    budget = (max_length or 10**9) - len(root) - longest_tail
    if budget < 1:
        raise ValueError(f"max_length {max_length} leaves no room for the dialogue after the instruction")
    turns = [t[:budget] for t in turns]
    trees = []
    for start, end, core_start, core_end in chunks([len(t) for t in turns], budget, config.placement):
        segments = [Segment(root)]
        for ids in turns[start:end]:
            segments.append(Segment(ids, len(segments) - 1))
        tree = DialogueTree(segments, [], [], [])
        for i in range(core_start, core_end):
            parent = len(turns[start:end]) if config.placement == "centered" else i - start + 1
            tree.utterances.append(i)
            tree.questions.append(len(segments))
            segments.append(Segment(questions[i], parent))
            chosen = [dialogue.utterances[i].label] if gold else list(answers)
            tree.answers.append([])
            for answer in chosen:
                tree.answers[-1].append(len(segments))
                segments.append(Segment(answer_ids[answer], tree.questions[-1]))
        trees.append(tree)
    return trees


def chain_ids(tree: DialogueTree, segment: int) -> list[int]:
    """The tokens of a segment and of all segments above it, root first: one separate sequence."""
    chain = []
    while segment is not None:
        chain.append(segment)
        segment = tree.segments[segment].parent
    return [t for s in reversed(chain) for t in tree.segments[s].ids]


def separate_contexts(
    dialogue: Dialogue,
    tokenizer,
    template: ChatTemplate,
    config: PromptConfig,
    answers: Sequence[str] = LABELS,
    *,
    max_length: int | None = None,
) -> list[list[int]]:
    """Per utterance, in order: the tokens its question sees (root, its chunk's turns, its question) as one
    sequence, for engines without tree masks (generation, vLLM). Chunked as the packed form is, so the
    answers' log-probabilities after it equal the packed form's."""
    contexts: list[list[int]] = [[] for _ in dialogue.utterances]
    for tree in dialogue_trees(dialogue, tokenizer, template, config, answers, max_length=max_length):
        for utterance, question in zip(tree.utterances, tree.questions, strict=True):
            contexts[utterance] = chain_ids(tree, question)
    return contexts


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
    max_length: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """[utterances, answers] log p(answer | dialogue, question), utterances in dialogue order.

    Trees are packed into rows of up to `max_tokens` tokens, one forward pass per row; vocabulary
    logits are computed only at the positions that predict answer tokens.
    """
    trees, first_row = [], []
    done = 0
    for dialogue in dialogues:
        for tree in dialogue_trees(dialogue, tokenizer, template, config, answers, max_length=max_length):
            trees.append(tree)
            first_row.append(done)
        done += len(dialogue)
    result = np.zeros((done, len(answers)))
    accepts = forward_parameters(model)
    window = sliding_window_of(model.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    dtype = next(model.parameters()).dtype
    lengths = [sum(len(s.ids) for s in tree.segments) for tree in trees]
    bar = progress_bar(done, "scoring", show=progress)
    for group in token_budget_groups(lengths, max_tokens):
        segments, offsets = merge_trees([trees[i] for i in group])
        packed = pack(segments)
        wanted = [  # (row of the result, per answer its (packed index, token) pairs)
            (first_row[i] + trees[i].utterances[n],
             [answer_targets(packed, segments, offset + q, offset + a) for a in trees[i].answers[n]])
            for i, offset in zip(group, offsets)
            for n, q in enumerate(trees[i].questions)
        ]
        needed = sorted({index for _, pairs in wanted for answer in pairs for index, _ in answer})
        column = {index: k for k, index in enumerate(needed)}
        inputs = batch([packed], pad_id, dtype, model.device, window)
        if "logits_to_keep" in accepts:
            logits = model(**inputs, logits_to_keep=torch.tensor(needed, device=model.device)).logits[0]
        else:
            logits = model(**inputs).logits[0, needed]
        log_probs = torch.log_softmax(logits.float(), dim=-1).cpu()
        for row, pairs in wanted:
            result[row] = [sum(float(log_probs[column[i], t]) for i, t in answer) for answer in pairs]
        bar.update(sum(len(trees[i].utterances) for i in group))
    bar.close()
    return result

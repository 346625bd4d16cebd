"""Backends: what an engine (`erckit.llm.engines`) answers for a batch of items, in a prompt form.

A backend answers a batch of items: by label scoring (label + the 7 probabilities, always a valid
label) or by generation (label parsed from the raw answer, None when it names no single label).
Every generation backend can also score, which resolves unparsed answers with the same model.

The engines work on token ids. A form gives each item its context:
  `PromptContexts`    one prompt per item (the window form, prepared files): its text, tokenised;
  `DialogueContexts`  the dialogue form for engines without tree masks (generation, vLLM): the
                      utterance's separate sequence (the dialogue once, then its question), chunked as
                      the packed form is, so its label scores equal the packed form's;
and `PackedDialogues` scores the dialogue form with transformers, whole dialogues in one pass each.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from erckit.data import Dialogue
from erckit.labels import LABELS, parse_answer
from erckit.llm.chat import ChatTemplate
from erckit.llm.dialogue_form import dialogue_log_probs, separate_contexts, token_budget_groups
from erckit.llm.items import Item
from erckit.llm.resume import Outcome
from erckit.llm.scoring import encode_contexts, length_batches, predictions_from_log_probs
from erckit.prompts import PromptConfig


@dataclass(frozen=True)
class DialogueForm:
    """The dialogues being predicted in the dialogue form, and its prompt settings."""

    prompts: PromptConfig
    dialogues: list[Dialogue]

    @classmethod
    def of(cls, dialogues: list[Dialogue] | None, prompts: PromptConfig | None) -> DialogueForm | None:
        """The dialogue form of these dialogues, or None (window form, or prepared prompts)."""
        return cls(prompts, dialogues) if dialogues is not None and prompts and prompts.form == "dialogue" else None

    def where(self) -> dict[str, tuple[int, int]]:
        """Utterance id -> (dialogue index, position in the dialogue)."""
        return {u.id: (d, i) for d, dialogue in enumerate(self.dialogues) for i, u in enumerate(dialogue.utterances)}

    def batches(self, items: Sequence[Item], size: int, *, unit: str) -> list[list[int]]:
        """Indices of `items`, each dialogue's together: `size` dialogues per batch (unit "dialogues"), or
        consecutive dialogues of up to `size` items (unit "items"; a longer dialogue alone)."""
        where = self.where()
        by_dialogue: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            by_dialogue.setdefault(where[item.id][0], []).append(index)
        groups = list(by_dialogue.values())
        if unit == "dialogues":
            chunks = [list(range(k, min(k + size, len(groups)))) for k in range(0, len(groups), size)]
        else:
            chunks = token_budget_groups([len(group) for group in groups], size)
        return [[i for g in chunk for i in groups[g]] for chunk in chunks]


class PromptContexts:
    """One prompt per item (the window form, prepared files): the token ids of its text in the template."""

    def __init__(self, tokenizer, template: ChatTemplate) -> None:
        self.tokenizer, self.template = tokenizer, template

    def __call__(self, items: Sequence[Item]) -> list[list[int]]:
        return encode_contexts(self.tokenizer, [item.prompt for item in items], self.template, LABELS[:1])[0]

    def batches(self, items: Sequence[Item], batch_size: int) -> list[list[int]]:
        """Batches of similar context length (each batch is a resumable unit)."""
        return length_batches([len(c) for c in self(items)], batch_size)


class DialogueContexts:
    """The dialogue form as one sequence per item: its separate sequence (`dialogue_form.separate_contexts`)."""

    def __init__(self, tokenizer, template: ChatTemplate, form: DialogueForm, max_length: int | None) -> None:
        self.tokenizer, self.template, self.form, self.max_length = tokenizer, template, form, max_length
        self.where = form.where()

    def __call__(self, items: Sequence[Item]) -> list[list[int]]:
        wanted = sorted({self.where[item.id][0] for item in items})
        contexts = {
            d: separate_contexts(self.form.dialogues[d], self.tokenizer, self.template, self.form.prompts,
                                 max_length=self.max_length)
            for d in wanted
        }
        return [contexts[self.where[item.id][0]][self.where[item.id][1]] for item in items]

    def batches(self, items: Sequence[Item], batch_size: int) -> list[list[int]]:
        """Whole dialogues together (their contexts share the dialogue: one prefix for vLLM's cache)."""
        return self.form.batches(items, batch_size, unit="items")


Contexts = PromptContexts | DialogueContexts


class NonFiniteScores(ValueError):
    """Label scores that are not numbers: the model overflowed in its precision."""


@dataclass
class Backend:
    """One engine behind one form: `log_probs` gives the 7 label log-probabilities of items, `answers`
    (generation backends only) their free-text answers, `batches` the resumable units."""

    name: str
    batches: Callable[[list[Item], int], list[list[int]]]
    log_probs: Callable[[list[Item]], np.ndarray]
    answers: Callable[[list[Item]], list[str]] | None = None

    def label_log_probs(self, items: list[Item]) -> np.ndarray:
        """`log_probs` of the items, refused when not numbers: NaN scores are a model overflowing in half
        precision (fp16), and would be written as labels (all Disgust) and probabilities that are not."""
        values = self.log_probs(items)
        broken = np.isnan(values).any(axis=1) | np.isneginf(values).all(axis=1)
        if broken.any():
            first = items[int(np.flatnonzero(broken)[0])].id
            raise NonFiniteScores(
                f"the model's label scores are not numbers (NaN, or -inf for every label) for {int(broken.sum())} of "
                f"{len(items)} utterances in a batch (first: {first}): the weights overflow in this precision (fp16 "
                "does for many models); load them in bf16 (on a GPU that has it) or fp32: `erckit predict --dtype`, "
                "or for a run's other commands the precision it records (llm.precision)")
        return values

    def score(self, items: list[Item]) -> list[Outcome]:
        """Label scoring: the most likely of the 7 labels and their probabilities."""
        predictions = predictions_from_log_probs([item.id for item in items], self.label_log_probs(items))
        return [Outcome(p.label, p.probs) for p in predictions]

    def run(self, items: list[Item]) -> list[Outcome]:
        """The backend's own answer: scored, or generated and parsed."""
        if self.answers is None:
            return self.score(items)
        return [Outcome(parse_answer(answer), raw=answer) for answer in self.answers(items)]


def form_contexts(
    tokenizer, template: ChatTemplate, form: DialogueForm | None, max_length: int | None
) -> tuple[Contexts, list[list[int]]]:
    """The form's contexts and the token ids of the 7 closed answers."""
    targets = encode_contexts(tokenizer, [""], template, LABELS)[1]
    if form is None:
        return PromptContexts(tokenizer, template), targets
    return DialogueContexts(tokenizer, template, form, max_length), targets


class PackedDialogues:
    """Label scoring in the dialogue form with transformers: whole dialogues packed into one sequence
    each (`dialogue_form.dialogue_log_probs`); a batch holds `batch_size` whole dialogues."""

    def __init__(self, model, tokenizer, template: ChatTemplate, form: DialogueForm, max_length: int | None,
                 pack_tokens: int) -> None:
        self.model, self.tokenizer, self.template, self.form = model, tokenizer, template, form
        self.max_length, self.pack_tokens = max_length, pack_tokens
        self.where = form.where()

    def batches(self, items: Sequence[Item], batch_size: int) -> list[list[int]]:
        return self.form.batches(items, batch_size, unit="dialogues")

    def log_probs(self, items: list[Item]) -> np.ndarray:
        chosen = sorted({self.where[item.id][0] for item in items})
        logp = dialogue_log_probs(
            self.model, self.tokenizer, [self.form.dialogues[d] for d in chosen], self.template, self.form.prompts,
            max_tokens=self.pack_tokens, max_length=self.max_length, progress=False,
        )
        starts = dict(zip(chosen, np.cumsum([0] + [len(self.form.dialogues[d]) for d in chosen])))
        return logp[[starts[self.where[item.id][0]] + self.where[item.id][1] for item in items]]

"""Engines: loaded weights (transformers or vLLM) that give a backend for any prompt form.

One interface, used by `erckit predict`, `calibrate`, `compare`, `select` and training's validation:
`Engine.backend(form)` answers items by label scoring (and by generation for the generating backends),
and `score_dialogues` labels dialogues through it, batch by batch, as `erckit predict` does, so every
command gives the same probabilities for the same run. The transformers engine scores the dialogue form
packed (`PackedDialogues`, `pack_tokens` tokens a row), other forms and engines per separate sequence.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from erckit.data import Dialogue
from erckit.labels import LABELS
from erckit.llm.backends import (
    Backend,
    DialogueForm,
    PackedDialogues,
    form_contexts,
)
from erckit.llm.chat import ChatTemplate
from erckit.llm.generation import generate_from_contexts, truncate_for_generation
from erckit.llm.items import Item, items_from_dialogues
from erckit.llm.run import LLMRun
from erckit.llm.scoring import context_log_probs, scoring_contexts
from erckit.llm.settings import BACKENDS, GENERATING, GREEDY, VLLM_BACKENDS, Decoding, PredictSettings
from erckit.llm.vllm_backend import VLLMOptions
from erckit.progress import bar as progress_bar
from erckit.prompts import PromptConfig


class Engine(Protocol):
    """Loaded weights behind one backend name (BACKENDS)."""

    name: str
    template: ChatTemplate

    def backend(self, form: DialogueForm | None) -> Backend:
        """The backend for the window form or prepared prompts (None), or for `form`."""


@dataclass(frozen=True)
class EngineOptions:
    """How an engine loads and answers; `trust_remote_code`: the user's word that the model's own code may run
    (a run record asking for it is refused without it: `erckit.remote_code`)."""

    dtype: str = "auto"
    device: str | None = None
    decoding: Decoding = GREEDY
    trust_remote_code: bool = False
    tensor_parallel_size: int = 1
    vllm: VLLMOptions = field(default_factory=VLLMOptions)

    def __post_init__(self) -> None:
        if self.device is not None:  # a device torch does not know, or a GPU the machine lacks: refused here
            from erckit.llm.loading import resolve_device

            resolve_device(self.device)

    @classmethod
    def of(cls, settings: PredictSettings, *, trust_remote_code: bool = False) -> EngineOptions:
        """The engine's part of `erckit predict`'s settings."""
        return cls(settings.dtype, settings.device, settings.decoding_preset(), trust_remote_code,
                   settings.tensor_parallel_size,
                   VLLMOptions(settings.gpu_memory_utilization, settings.max_num_batched_tokens))


DEFAULT_OPTIONS = EngineOptions()


@dataclass
class TransformersEngine:
    """A transformers model and tokenizer (already loaded: a run's weights, or the model being trained)."""

    name: str
    model: object
    tokenizer: object
    template: ChatTemplate
    max_length: int | None
    pack_tokens: int
    decoding: Decoding = GREEDY

    def backend(self, form: DialogueForm | None) -> Backend:
        if form is not None and self.name == "score":
            packed = PackedDialogues(self.model, self.tokenizer, self.template, form, self.max_length, self.pack_tokens)
            return Backend(self.name, packed.batches, packed.log_probs)
        contexts, targets = form_contexts(self.tokenizer, self.template, form, self.max_length)

        def log_probs(items: list[Item]) -> np.ndarray:
            cut = scoring_contexts(contexts(items), targets, self.max_length)
            return context_log_probs(self.model, self.tokenizer, cut, targets, batch_size=len(items), progress=False)

        def answers(items: list[Item]) -> list[str]:
            cut = contexts(items)
            if self.max_length is not None:
                cut = truncate_for_generation(cut, self.max_length, self.decoding.max_new_tokens)
            return generate_from_contexts(self.model, self.tokenizer, cut, self.template, self.decoding,
                                          batch_size=len(items), progress=False)

        return Backend(self.name, contexts.batches, log_probs, answers if self.name in GENERATING else None)


@dataclass
class VLLMEngine:
    """A vLLM engine (`erckit.llm.vllm_backend`): separate sequences, whole dialogues together."""

    name: str
    engine: object
    template: ChatTemplate
    max_length: int | None
    decoding: Decoding = GREEDY

    def backend(self, form: DialogueForm | None) -> Backend:
        from erckit.llm.vllm_backend import vllm_context_log_probs, vllm_generate_from_contexts

        limit = min(self.max_length or self.engine.max_model_len, self.engine.max_model_len)
        contexts, targets = form_contexts(self.engine.tokenizer, self.template, form, limit)

        def log_probs(items: list[Item]) -> np.ndarray:
            return vllm_context_log_probs(self.engine, scoring_contexts(contexts(items), targets, limit), targets)

        def answers(items: list[Item]) -> list[str]:
            return vllm_generate_from_contexts(self.engine, contexts(items), self.template, self.decoding)

        return Backend(self.name, contexts.batches, log_probs, answers if self.name in GENERATING else None)


def check_own_code(run: LLMRun, options: EngineOptions = DEFAULT_OPTIONS) -> None:
    """Refuse a run whose weights (or base model) would run their own code unless the options trust it."""
    from erckit.remote_code import refuse

    refuse(run.own_code, options.trust_remote_code)


def weights_dtype(run: LLMRun, backend: str, options: EngineOptions = DEFAULT_OPTIONS) -> str:
    """The dtype `load_engine` loads the run's weights in, by name (`float32`, `bfloat16`; vLLM's `auto` on a GPU
    when the run records none): what a resumed prediction must match."""
    import torch

    from erckit.llm.loading import load_dtype, run_dtype
    from erckit.llm.vllm_backend import vllm_dtype

    dtype = run_dtype(options.dtype, run.record.precision, options.device)
    if backend in VLLM_BACKENDS:
        return vllm_dtype(dtype, torch.cuda.is_available())
    return str(load_dtype(dtype, options.device)).removeprefix("torch.")


def load_engine(run: LLMRun, backend: str = "score", options: EngineOptions = DEFAULT_OPTIONS) -> Engine:
    """Load the run's weights for `backend` (one of BACKENDS), with its template, max length and packing."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    from erckit.llm.loading import load_model, run_dtype

    record = run.record
    template = run.template
    check_own_code(run, options)
    trust = options.trust_remote_code
    dtype = run_dtype(options.dtype, record.precision, options.device)
    if backend in VLLM_BACKENDS:
        from erckit.llm.vllm_backend import vllm_engine

        engine = vllm_engine(
            run.model, adapter=run.adapter, tensor_parallel_size=options.tensor_parallel_size, dtype=dtype,
            trust_remote_code=trust, max_model_len=record.max_length, options=options.vllm,
            seed=options.decoding.seed,
        )
        return VLLMEngine(backend, engine, template, record.max_length, options.decoding)
    model, tokenizer = load_model(run.model, adapter=run.adapter, dtype=dtype, trust_remote_code=trust,
                                  device=options.device)
    return TransformersEngine(backend, model, tokenizer, template, record.max_length, record.pack_tokens,
                              options.decoding)


def score_dialogues(
    engine: Engine, dialogues: list[Dialogue], prompts: PromptConfig, batch_size: int, *, progress: bool = False,
    last_only: bool = False,
) -> np.ndarray:
    """[utterances, 7] label log-probabilities of every utterance in dialogue order, scored batch by batch
    as `erckit predict` scores them (`batch_size` prompts, or dialogues in the dialogue form). `last_only`:
    each dialogue's last utterance only, [dialogues, 7] (live labelling: one window prompt, not one a turn)."""
    if not dialogues:
        return np.zeros((0, len(LABELS)))
    items = items_from_dialogues(dialogues, prompts, last_only=last_only)
    backend = engine.backend(DialogueForm.of(dialogues, prompts))
    result = np.zeros((len(items), len(LABELS)))
    with progress_bar(len(items), "scoring", show=progress) as bar:
        for batch in backend.batches(items, batch_size):
            result[batch] = backend.label_log_probs([items[i] for i in batch])
            bar.update(len(batch))
    return result

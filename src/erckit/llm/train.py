"""LoRA (or QLoRA, or full) fine-tuning of a chat LLM on the emotion prompts, on transformers' Trainer.

Validation macro-F1 by label scoring every `eval_steps`, logged with the loss; the checkpoint with
the best macro-F1 is kept and exported to `<out>/best`. The same command resumes a killed run from
its last checkpoint, and runs unchanged under `torchrun` / `accelerate launch` (DeepSpeed, FSDP).
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from datasets import Dataset
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DataCollatorForSeq2Seq,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from erckit.atomic import write_text_atomic
from erckit.config import ConfigError, LLMConfig, RunConfig
from erckit.data import Dialogue
from erckit.labels import LABELS
from erckit.llm.chat import ChatTemplate, encode_pair, get_template
from erckit.llm.merge import LLM_INFO
from erckit.llm.scoring import forward_parameters, label_log_probs
from erckit.metrics import scores
from erckit.plots import plot_training
from erckit.prompts import Example, PromptConfig, detect_language, emotion_examples, same_speaker_examples

BEST = "best"


def prompt_config(config: LLMConfig, dialogues: list[Dialogue]) -> PromptConfig:
    """The PromptConfig of a recipe; language 'auto' is detected from the dialogues."""
    settings = config.prompt
    language = detect_language(dialogues) if settings.language == "auto" else settings.language
    return PromptConfig(language, settings.window, settings.placement, settings.variant)


def training_examples(config: LLMConfig, dialogues: list[Dialogue], prompts: PromptConfig) -> list[Example]:
    """Emotion examples, plus the auxiliary same-speaker task when the recipe asks for it."""
    examples = emotion_examples(dialogues, prompts)
    if config.prompt.same_speaker:
        examples += same_speaker_examples(dialogues, prompts, config.prompt.same_speaker)
    return examples


def tokenize(
    examples: list[Example], tokenizer: PreTrainedTokenizerBase, template: ChatTemplate, max_length: int
) -> Dataset:
    """input_ids = context + answer; labels mask the context (-100), so the loss is on the answer only.

    A context too long for `max_length` loses its oldest tokens (after the first, usually BOS).
    """
    rows: dict[str, list] = {"input_ids": [], "labels": []}
    for example in examples:
        context, target = encode_pair(template, example.prompt, example.answer, tokenizer)
        room = max_length - len(target)
        if len(context) > room:
            context = context[:1] + context[len(context) - room + 1 :]
        rows["input_ids"].append(context + target)
        rows["labels"].append([-100] * len(context) + target)
    return Dataset.from_dict(rows)


def precision_flags(precision: str) -> dict[str, bool]:
    """Trainer flags: bf16 (or fp16) on GPU when 'auto', fp32 on CPU."""
    if precision == "auto":
        if not torch.cuda.is_available():
            return {"bf16": False, "fp16": False}
        return {"bf16": True, "fp16": False} if torch.cuda.is_bf16_supported() else {"bf16": False, "fp16": True}
    if precision in ("fp16", "bf16") and not torch.cuda.is_available():
        raise ConfigError(f"llm.precision={precision} needs a GPU; use fp32 (or auto) on CPU")
    return {"bf16": precision == "bf16", "fp16": precision == "fp16"}


def load_trainable(config: LLMConfig):
    """The base model with LoRA adapters (or QLoRA, or all weights trainable) and its tokenizer."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    from erckit.llm.packaged import resolve_model

    source = resolve_model(config.model)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=config.trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # answers end every row: the loss needs logits of the last columns only
    extra: dict = {}
    if config.finetuning == "qlora":
        from transformers import BitsAndBytesConfig

        if not torch.cuda.is_available():
            raise ConfigError("llm.finetuning=qlora needs a CUDA GPU and bitsandbytes; use lora on CPU")
        extra["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
    elif config.finetuning not in ("lora", "full"):
        raise ConfigError(f"llm.finetuning must be lora, qlora or full, not {config.finetuning!r}")
    dtype = torch.float32 if not torch.cuda.is_available() or config.finetuning == "full" else "auto"
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype=dtype, trust_remote_code=config.trust_remote_code, **extra
    )
    if config.finetuning == "full":
        return model, tokenizer
    if config.finetuning == "qlora":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=config.gradient_checkpointing)
    lora = LoraConfig(
        r=config.lora.rank, lora_alpha=config.lora.alpha, lora_dropout=config.lora.dropout,
        target_modules=config.lora.target_modules, task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora), tokenizer


def answer_loss(model, inputs: dict) -> torch.Tensor:
    """Mean cross-entropy over the batch's answer tokens, computing vocabulary logits only where answers are.

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
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100)


class MacroF1Trainer(Trainer):
    """A Trainer whose loss is on the answer tokens only and whose evaluation is validation macro-F1
    by label scoring (always-valid labels)."""

    def __init__(self, *args, val_prompts: list[str], val_gold: list[str], template: ChatTemplate,
                 eval_batch_size: int, max_length: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.val_prompts, self.val_gold = val_prompts, val_gold
        self.template, self.eval_batch_size, self.max_length = template, eval_batch_size, max_length
        self.loss_is_scaled_for_ga = False  # a per-micro-batch mean: the Trainer divides by accumulation steps

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = answer_loss(model, inputs)
        return (loss, None) if return_outputs else loss

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        started = time.perf_counter()
        model = self.model
        was_training = model.training
        model.eval()
        try:
            logp = label_log_probs(
                model, self.processing_class, self.val_prompts, self.template, batch_size=self.eval_batch_size,
                progress=self.is_world_process_zero(), max_length=self.max_length,  # truncated as in training
            )
        finally:
            model.train(was_training)
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


def train_llm(
    config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path,
    callbacks: list[TrainerCallback] = (),
) -> dict:
    """Fine-tune, select by validation macro-F1, export the best adapter (or model) to `out/best`."""
    llm = config.llm
    template = get_template(llm.template)
    model, tokenizer = load_trainable(llm)
    if llm.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    prompts = prompt_config(llm, train)
    train_set = tokenize(training_examples(llm, train, prompts), tokenizer, template, llm.max_length)
    val_examples = emotion_examples(validation, prompts) if validation else []
    if llm.eval_subset:
        val_examples = val_examples[: llm.eval_subset]
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=llm.batch_size, gradient_accumulation_steps=llm.grad_accum,
        learning_rate=llm.lr, lr_scheduler_type=llm.scheduler, warmup_steps=llm.warmup_ratio,  # a float < 1 is a ratio
        num_train_epochs=llm.epochs, max_steps=llm.max_steps, logging_steps=llm.logging_steps,
        eval_strategy="steps" if val_examples else "no", eval_steps=llm.eval_steps,
        save_strategy="steps", save_steps=llm.eval_steps, save_total_limit=llm.save_total_limit,
        load_best_model_at_end=bool(val_examples), metric_for_best_model="macro_f1" if val_examples else None,
        greater_is_better=True, report_to=[], seed=config.train.seed, deepspeed=llm.deepspeed,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, remove_unused_columns=False,
        disable_tqdm=False, **precision_flags(llm.precision),
    )
    trainer = MacroF1Trainer(
        model=model, args=args, train_dataset=train_set,
        eval_dataset=tokenize(val_examples[:1], tokenizer, template, llm.max_length) if val_examples else None,
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100, padding=True),
        processing_class=tokenizer, callbacks=list(callbacks),
        val_prompts=[e.prompt for e in val_examples], val_gold=[e.answer for e in val_examples],
        template=template, eval_batch_size=llm.eval_batch_size, max_length=llm.max_length,
    )
    resume = _last_checkpoint(out)
    if resume is not None:
        print(f"resuming {out} from {resume.name}")
    started = time.perf_counter()
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    seconds = time.perf_counter() - started
    trainer.save_model(str(out / BEST))  # the best checkpoint's weights (loaded at the end) or the last
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(out / BEST))
        record = {"template": template.name, "base_model": llm.model, "prompt": asdict(prompts)}
        write_text_atomic(out / BEST / LLM_INFO, json.dumps(record, indent=2) + "\n")
        log = trainer.state.log_history
        plot_training(
            out / "training.png", "step", [(h["step"], h["loss"]) for h in log if "loss" in h],
            {"validation macro-F1": [(h["step"], h["eval_macro_f1"]) for h in log if "eval_macro_f1" in h]},
        )
    return {
        "best_checkpoint": trainer.state.best_model_checkpoint, "best_macro_f1": trainer.state.best_metric,
        "global_step": trainer.state.global_step, "train_seconds": seconds,
        "validation_utterances": len(val_examples), "prompt": asdict(prompts),
        "history": [h for h in trainer.state.log_history if "loss" in h or "eval_macro_f1" in h],
    }

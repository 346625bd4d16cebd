"""`model: llm`: a chat LLM fine-tuned (LoRA, QLoRA or full) on the emotion prompts (erckit.llm)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from erckit.config import RunConfig
from erckit.data import Dialogue
from erckit.kinds import DATA
from erckit.predictor import Predictor, offsets_of

NAME = "llm"
READS = {"data": DATA, "llm": None, "train": ("seed",)}
ENGINES = True  # also scored by `erckit predict`'s backends (generation, vLLM, prepared files)
BEST_SO_FAR = False
REPORTERS = ("tensorboard", "wandb", "mlflow")  # report_to: passed to the Hugging Face Trainer


def outputs() -> tuple[str, ...]:
    """The files its training writes at the top of a run folder (its weights go to checkpoint-N/ and best/)."""
    from erckit.llm.record import RECORD_FILE
    from erckit.plots import TRAINING_PLOT

    return RECORD_FILE, TRAINING_PLOT


def resumable(folder: Path) -> bool:
    """Whether an unfinished run left a checkpoint-N to resume from."""
    return any(folder.glob("checkpoint-*"))


def check(config: RunConfig) -> None:
    from erckit.config import ConfigError
    from erckit.recipes import deepspeed_config, zero_stage

    config.llm.check_names()
    if config.llm.deepspeed:
        stage = zero_stage(deepspeed_config(config.llm.deepspeed))
        if config.llm.finetuning == "qlora" and stage == 3:  # transformers refuses a device map under ZeRO-3
            raise ConfigError(f"llm.finetuning=qlora with llm.deepspeed={config.llm.deepspeed} (ZeRO stage 3): a "
                              "quantised model is placed on each process's GPU, which ZeRO-3 refuses; use zero2 "
                              "(or no DeepSpeed: DDP under torchrun)")


def check_sources(config: RunConfig) -> None:
    """The base model can be found, and this machine can run what the recipe asks (a GPU for fp16, bf16 and
    QLoRA; the deepspeed package for llm.deepspeed; one GPU a process): refused before the run folder is written."""
    import importlib.util

    import torch

    from erckit.cache import check_source, is_packaged
    from erckit.config import ConfigError
    from erckit.llm.distributed import check_one_gpu_per_process
    from erckit.llm.packaged import PACKAGED_LM_NAME, require_gemma
    from erckit.llm.train import precision_flags, quantization

    check_one_gpu_per_process(torch.cuda.device_count())
    check_source(config.llm.model, "llm.model", (PACKAGED_LM_NAME, "packaged"))
    if is_packaged(config.llm.model):
        require_gemma()
    precision_flags(config.llm.precision)
    quantization(config.llm)
    if config.llm.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(f"llm.deepspeed={config.llm.deepspeed} needs the deepspeed package (a GPU machine: "
                          "pip install -c constraints/gpu.txt '.[gpu]')")


def train(config: RunConfig, train: list[Dialogue], validation: list[Dialogue] | None, out: Path) -> dict:
    from erckit.llm.train import train_llm

    return train_llm(config, train, validation, out)


def load(folder: Path, config: RunConfig, info: dict, trust_remote_code: bool) -> Predictor:
    """The run's best weights in one engine; labels are scored as `erckit predict` scores them."""
    from erckit.llm.engines import EngineOptions, load_engine, score_dialogues
    from erckit.llm.run import open_run
    from erckit.llm.scoring import softmax

    run = open_run(str(folder), info=info)
    engine = load_engine(run, options=EngineOptions(trust_remote_code=trust_remote_code))

    def score(dialogues: list[Dialogue], progress: bool, last_only: bool = False) -> np.ndarray:
        return softmax(score_dialogues(engine, dialogues, run.record.prompt, run.record.eval_batch_size,
                                       progress=progress, last_only=last_only))

    return Predictor(folder, NAME, score, offsets_of(info),
                     score_last=lambda dialogues: score(dialogues, False, last_only=True))

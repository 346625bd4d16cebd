"""The few collective steps of a multi-process run (torchrun / accelerate launch), no-ops in one process.

Validation is split into shards (`validation_share`), except where the parameters themselves are sharded
(FSDP, ZeRO-3): there each forward call gathers them from every process, so every process must make the
same calls, and only the same inputs ensure that; every process then scores all of validation.
`gather_rows` puts every process's rows back together on every process. `barrier` makes the processes wait for each
other; `is_main_process` says which one writes files.
"""

from __future__ import annotations

import os
import sys

import numpy as np


def _dist():
    """torch.distributed, imported when first needed (a one-process TF-IDF run never needs torch)."""
    import torch.distributed

    return torch.distributed


def initialized() -> bool:
    """Whether a process group runs (none can before torch is imported)."""
    return "torch" in sys.modules and _dist().is_available() and _dist().is_initialized()


def world() -> tuple[int, int]:
    """(rank, world size) of this process: the process group's, or before it exists the launcher's
    RANK / WORLD_SIZE (set by torchrun, accelerate and deepspeed); (0, 1) when not launched so."""
    if initialized():
        return _dist().get_rank(), _dist().get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return world()[0] == 0


def check_one_gpu_per_process(visible_gpus: int) -> None:
    """Refuse several GPUs seen by one process that no launcher started: the Trainer would wrap the model in
    nn.DataParallel (every weight copied to every GPU at each step, the batch multiplied without a record)."""
    if visible_gpus > 1 and world()[1] == 1 and "LOCAL_RANK" not in os.environ:
        from erckit.config import ConfigError

        raise ConfigError(f"{visible_gpus} GPUs are visible to one process: train on all of them with torchrun "
                          f"--nproc_per_node {visible_gpus} -m erckit train ... (or accelerate launch), or on one "
                          "with CUDA_VISIBLE_DEVICES=0")


def barrier() -> None:
    if initialized() and _dist().get_world_size() > 1:
        _dist().barrier()


def validation_share(count: int, rank: int, size: int, parameters_sharded: bool) -> list[int]:
    """The validation indices process `rank` of `size` scores: every size-th from rank, or all of them when
    `parameters_sharded` (FSDP, ZeRO-3: the same forward calls on every process, whatever the inputs' lengths)."""
    return list(range(count)) if parameters_sharded else list(range(rank, count, size))


def _all_parts(part: tuple) -> list[tuple]:
    """Every process's `part`, in rank order (just this one outside a process group)."""
    if not (initialized() and _dist().get_world_size() > 1):
        return [part]
    parts: list = [None] * _dist().get_world_size()
    _dist().all_gather_object(parts, part)
    return parts


def gather_rows(indices: list[int], rows: np.ndarray, count: int) -> np.ndarray:
    """[count, K]: every process's `rows` (for its `indices`) gathered into one array, on every process."""
    result = np.zeros((count, rows.shape[1]), dtype=rows.dtype)
    for part_indices, part_rows in _all_parts((indices, rows)):
        result[part_indices] = part_rows
    return result


def gather_objects(indices: list[int], items: list, count: int) -> list:
    """Every process's `items` (one per index of its `indices`) as one list of `count`, on every process."""
    result: list = [None] * count
    for part_indices, part_items in _all_parts((indices, items)):
        for index, item in zip(part_indices, part_items):
            result[index] = item
    return result

"""An exponential moving average of the trained weights (`train.ema`): what is validated and kept in place of the
raw weights, which the optimiser goes on training."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.optim.swa_utils import get_ema_multi_avg_fn


class WeightAverage:
    """average ← decay · average + (1 − decay) · weights after every optimiser step, over the trained parameters."""

    def __init__(self, params: list[torch.nn.Parameter], decay: float) -> None:
        self.params = params
        self.average = [p.detach().clone() for p in params]
        self._update = get_ema_multi_avg_fn(decay)

    def update(self) -> None:
        self._update(self.average, [p.detach() for p in self.params], None)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The average in the model's parameters for the block (to validate and save it), the raw weights after."""
        raw = [p.detach().clone() for p in self.params]
        with torch.no_grad():
            for param, average in zip(self.params, self.average, strict=True):
                param.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for param, weights in zip(self.params, raw, strict=True):
                    param.copy_(weights)

    def state(self) -> dict[str, torch.Tensor]:
        """The average as named tensors, for the checkpoint."""
        return {f"ema.{i}": a.contiguous() for i, a in enumerate(self.average)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the average from a checkpoint's tensors (`state`'s names)."""
        for i, average in enumerate(self.average):
            average.copy_(tensors[f"ema.{i}"])

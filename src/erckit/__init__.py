"""erckit: emotion recognition in conversation with fine-tuned language models.

The Python API (erckit.api): `load` a trained model folder once and `Model.label` dialogues from files,
Python lists or dicts, or `Model.label_frame` a pandas DataFrame with MELD's columns; `train` from a recipe.
Bad input raises `DataError`, a bad recipe or override `ConfigError` (both ValueError, one line each).
The names are imported on first use, so `import erckit` (and the CLI) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Model": "erckit.api", "load": "erckit.api", "to_dialogues": "erckit.api", "train": "erckit.api",
    "Dialogue": "erckit.data", "Utterance": "erckit.data", "LABELS": "erckit.labels", "Prediction": "erckit.predictions",
    "DataError": "erckit.data", "ConfigError": "erckit.config",
}
__all__ = ["LABELS", "ConfigError", "DataError", "Dialogue", "Model", "Prediction", "Utterance", "__version__", "load",
           "to_dialogues", "train"]

if TYPE_CHECKING:
    from erckit.api import Model, load, to_dialogues, train
    from erckit.config import ConfigError
    from erckit.data import DataError, Dialogue, Utterance
    from erckit.labels import LABELS
    from erckit.predictions import Prediction


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'erckit' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names too (imported on first use), for dir(), help() and completion."""
    return sorted({*globals(), *__all__})

"""Command-line flags derived from declared settings: a dataclass field with `metadata={"help", "choices"}`
(`erckit.prompts.setting`) becomes `--field-name`, so a setting is declared once; and a flag's value is checked
by the check of what it sets (a recipe key, a declared setting), so a value the recipe refuses is refused here too."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields, is_dataclass, replace
from typing import Any

RECIPE_KEYS = {  # a flag (by dest) that sets what a recipe key sets: checked by that key's own check
    "max_length": "llm.max_length", "batch_size": "llm.eval_batch_size", "window": "llm.prompt.window",
    "same_speaker": "llm.prompt.same_speaker", "seed": "train.seed", "limit": "llm.eval_subset",
}


def flag(name: str) -> str:
    """The flag of a field: `max_length` -> `--max-length`."""
    return "--" + name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser | Any, settings: type, *, unset: str | None = None,
              skip: tuple[str, ...] = ()) -> None:
    """One flag per declared field of `settings`, with its help and choices. No argparse defaults: an unset
    flag is None. The help ends with what an unset flag means: `unset` (e.g. "the run's", where the run
    record wins), else the field's `shown` metadata or its declared default."""
    hints = typing.get_type_hints(settings)
    for item in fields(settings):
        if item.name in skip:
            continue
        kind = next((t for t in typing.get_args(hints[item.name]) if t is not type(None)), hints[item.name])
        default = unset or item.metadata.get("shown") or item.default
        parser.add_argument(flag(item.name), dest=item.name, type=kind if kind in (int, float) else None,
                            choices=item.metadata.get("choices"),
                            help=f"{item.metadata.get('help')} (default: {default})")


def given(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The fields of `settings` set explicitly on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(settings) if getattr(args, f.name, None) is not None}


def _refused(name: str, value: Any, err: ValueError) -> ValueError:
    from erckit.config import ConfigError

    return ConfigError(f"{flag(name)} {value}: {err}")


def check_recipe_values(args: argparse.Namespace) -> None:
    """Flags that set what a recipe key sets (RECIPE_KEYS) are checked by that key's own check, before anything
    runs: `--max-length 1` is refused as `llm.max_length=1` is, naming the flag."""
    from erckit.config import RunConfig

    for name, key in RECIPE_KEYS.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        *path, field = key.split(".")
        section: Any = RunConfig
        for part in path:
            section = typing.get_type_hints(section)[part]
        if not is_dataclass(section):
            raise TypeError(f"RECIPE_KEYS: {key} is not a field of a recipe section")
        try:
            section(**{field: value})  # the section's own check, on this value (the other fields: defaults)
        except ValueError as err:
            raise _refused(name, value, err) from None


def apply(settings: Any, values: dict[str, Any]) -> Any:
    """`settings` (a declared settings dataclass, e.g. a run's PromptConfig) with flag values applied, checked by
    its own check; a refusal names the flag whose field it names first (`--window 0: window must be ...`)."""
    try:
        return replace(settings, **values)
    except ValueError as err:
        name = str(err).split()[0]
        if name not in values:
            raise
        raise _refused(name, values[name], err) from None

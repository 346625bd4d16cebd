"""Command-line flags derived from declared settings: a dataclass field with `metadata={"help", "choices"}`
(`erckit.prompts.setting`) becomes `--field-name`, so a setting is declared once."""

from __future__ import annotations

import argparse
import typing
from dataclasses import fields
from typing import Any


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
        kind = hints[item.name]
        default = unset or item.metadata.get("shown") or item.default
        parser.add_argument(flag(item.name), dest=item.name, type=kind if kind in (int, float) else None,
                            choices=item.metadata.get("choices"),
                            help=f"{item.metadata.get('help')} (default: {default})")


def given(args: argparse.Namespace, settings: type) -> dict[str, Any]:
    """The fields of `settings` set explicitly on the command line."""
    return {f.name: getattr(args, f.name) for f in fields(settings) if getattr(args, f.name, None) is not None}

"""Progress bars of long non-LLM work (predict, combine, evaluate): tqdm on stderr, shown only on a terminal
and only once the work has taken DELAY seconds (small inputs finish without one)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

DELAY = 2.0  # seconds before a bar appears


def bar(total: int | None, desc: str, *, unit: str = "utt", show: bool = True) -> tqdm:
    """A bar of `total` steps (None: a count without an end); `show`: the caller asks for progress."""
    return tqdm(total=total, desc=desc, unit=unit, disable=None if show else True, delay=DELAY, dynamic_ncols=True)


@contextlib.contextmanager
def steps(count: int, desc: str, *, show: bool = True) -> Iterator[Callable[[str], None]]:
    """A bar of `count` named steps; yields `begin(name)`, which ends the step before it (if any)."""
    with bar(count, desc, unit="step", show=show) as shown:
        begun: list[str] = []

        def begin(name: str) -> None:
            shown.update(1 if begun else 0)
            begun.append(name)
            shown.set_postfix_str(name)

        yield begin
        shown.update(1)

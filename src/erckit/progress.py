"""Progress bars of long work (predict with any model, LLM scoring and generation, select, combine, evaluate):
tqdm on stderr, shown only on a terminal and only once the work has taken DELAY seconds (small inputs finish
without one; a piped log gets none). Training keeps its own per-epoch bars and lines (the encoder's, the
Trainer's), which logs show too."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm

DELAY = 2.0  # seconds before a bar appears


def bar(total: int | None, desc: str, *, unit: str = "utt", initial: int = 0, show: bool = True) -> tqdm:
    """A bar of `total` steps (None: a count without an end), `initial` of them done before (a resumed run);
    `show`: the caller asks for progress."""
    return tqdm(total=total, desc=desc, unit=unit, initial=initial, disable=None if show else True, delay=DELAY,
                dynamic_ncols=True)


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

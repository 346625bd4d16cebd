"""The README's Python example, read from README.md (its ```python block under "## Use it from Python"),
so the tests and `make wheel-check` run it exactly as written. `python tests/readme_example.py` prints it."""

from __future__ import annotations

import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_example(readme: Path = README) -> str:
    """The code of the first ```python block in the "Use it from Python" section."""
    section = readme.read_text(encoding="utf-8").split("\n## Use it from Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    if not blocks:
        raise ValueError(f"{readme}: no ```python block under '## Use it from Python'")
    return blocks[0]


if __name__ == "__main__":
    sys.stdout.write(python_example())

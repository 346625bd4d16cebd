"""How `erckit serve` listens and what one request may hold: declared and checked once, read by the CLI's flags
(`erckit.flags.add_flags`), by `erckit.serve.serve` and by the app."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from erckit.prompts import setting

if TYPE_CHECKING:
    from erckit.serve.protocol import Limits


@dataclass(frozen=True)
class ServeSettings:
    """The server's address, its request limits and its batches."""

    host: str = setting("127.0.0.1", "address to listen on (127.0.0.1: this machine only; 0.0.0.0: every network)")
    port: int = setting(8000, "port (0: any free port)")
    max_turns: int = setting(200, "most turns in one request")
    max_chars: int = setting(2000, "most characters in one turn")
    max_batch_utterances: int = setting(256, "utterances of concurrent requests labelled in one model call")

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise TypeError(f"host must be an address or a name as text, not {type(self.host).__name__} {self.host!r}")
        if not self.host.strip():
            raise ValueError("host must be an address or a name (0.0.0.0: every network), not empty")
        for name in ("port", "max_turns", "max_chars", "max_batch_utterances"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be a whole number, not {type(value).__name__} {value!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535, not {self.port}")
        for name in ("max_turns", "max_chars", "max_batch_utterances"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive number, not {getattr(self, name)}")

    @property
    def limits(self) -> Limits:
        # pydantic: imported when a server starts, not for `erckit --help`
        from erckit.serve.protocol import Limits

        return Limits(max_turns=self.max_turns, max_chars=self.max_chars)

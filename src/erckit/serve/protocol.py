"""The HTTP API's request and response bodies (pydantic models: unknown fields and wrong types are refused)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

NAME_CHARS = 200  # most characters in a speaker's name or a turn id


class Turn(BaseModel):
    """One turn of a conversation; `id` defaults to its position (1, 2, ...)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    speaker: str = Field(min_length=1, max_length=NAME_CHARS)
    text: str = Field(min_length=1)  # its most characters: --max-chars, checked by the app
    id: str | None = Field(default=None, min_length=1, max_length=NAME_CHARS)


class Conversation(BaseModel):
    """POST /api/label (every turn labelled, the model seeing the whole conversation) and /api/live (the last
    turn labelled from the turns up to it only)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    turns: list[Turn] = Field(min_length=1)


class LabelledTurn(BaseModel):
    id: str
    label: str
    probs: dict[str, float]


class Labels(BaseModel):
    """The answer: one labelled turn per turn given (/api/label), or the last turn only (/api/live)."""

    kind: str
    turns: list[LabelledTurn]


class Limits(BaseModel):
    """What one request may hold (erckit serve's --max-turns, --max-chars)."""

    max_turns: int
    max_chars: int


class Info(BaseModel):
    """GET /api/info: the model (its folder's name, its kind), the erckit version, the labels in order, a colour
    per label (the web page uses them), the limits."""

    model: str
    kind: str
    erckit_version: str
    labels: list[str]
    colours: dict[str, str]
    limits: Limits


class Refusal(BaseModel):
    """Every refused request's answer (4xx) and a model failure's (500): one line saying why."""

    error: str


REFUSALS = {status: {"model": Refusal, "description": why} for status, why in (
    (400, "malformed JSON, a body that is not UTF-8 JSON, or an empty body"),
    (413, "more turns, characters or bytes than the limits allow"),
    (415, "a body sent as something other than JSON (Content-Type)"),
    (422, "a wrong type, an unknown or missing field, a blank text, speaker or id, duplicate ids"),
    (500, "the model failed"),
)}
"""The error answers of the labelling routes, for the OpenAPI schema."""

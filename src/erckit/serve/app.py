"""The labelling server's FastAPI app: a web page, label a whole conversation, label the last turn live.

Every bad request gets a 4xx answer `{"error": "<one line>"}`; the model runs in the batcher's thread, so the
server keeps answering while it works.
"""

from __future__ import annotations

import asyncio
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from erckit import __version__
from erckit.data import DataError, Dialogue, Utterance, check_dialogues, turn_utterance
from erckit.labels import LABELS
from erckit.models import Predictor
from erckit.predictions import Prediction
from erckit.serve.batcher import Batcher
from erckit.serve.protocol import NAME_CHARS, REFUSALS, Conversation, Info, LabelledTurn, Labels, Limits, Turn
from erckit.serve.settings import ServeSettings

# one colour per label, in LABELS order (Disgust, Anger, Sad, Happy, Neutral, Surprise, Fear)
COLOURS = dict(zip(LABELS, ("#b5d99c", "#f4a3a3", "#a9c7ef", "#ffe08a", "#e3e3e3", "#f6c28b", "#cdb4ef")))


class RequestRefused(Exception):
    """A request the server will not run (too large, inconsistent): its status and one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class BodyLimit:
    """ASGI middleware refusing a request body over `max_bytes` with 413: one declared longer (Content-Length)
    before it is read, one sent in chunks as soon as what arrived passes the limit (never read further)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = Headers(scope=scope).get("content-length")
        if length and length.isdigit() and int(length) > self.max_bytes:
            reason = f"request body of {length} bytes: more than the {self.max_bytes} the limits allow"
            return await _error(413, reason)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:  # raised where the route reads its body: answered by http_error
                raise HTTPException(413, f"request body over the {self.max_bytes} bytes the limits allow")
            return message

        await self.app(scope, counted, send)


def _error(status: int, reason: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(reason.split())}, status_code=status)


def _validation_reason(err: RequestValidationError, content_type: str) -> tuple[int, str]:
    errors = err.errors()  # an unknown field first: it explains a missing one ({"dialogue": ...} for "turns")
    first = next((e for e in errors if e.get("type") == "extra_forbidden"), errors[0])
    media = content_type.partition(";")[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):  # curl -d sends a form: never parsed as JSON
        sent = f"is sent as {media}" if media else "has no Content-Type"
        return 415, f"the body {sent}: send JSON with Content-Type: application/json"
    if first.get("type") == "missing" and tuple(first.get("loc", ())) == ("body",):
        return 400, "empty body: send the conversation as JSON ({\"turns\": [...]})"
    if first.get("type") == "json_invalid":
        return 400, f"malformed JSON: {first.get('ctx', {}).get('error', first.get('msg'))}"
    parts = [part for part in first.get("loc", ()) if part != "body"]
    turn = ""  # a turn counted from 1, as the other refusals count it (pydantic counts from 0)
    if len(parts) >= 2 and parts[0] == "turns" and isinstance(parts[1], int):
        turn, parts = f"turn {parts[1] + 1}", parts[2:]
    field = ".".join(str(part) for part in parts) or ("" if turn else "body")
    if first.get("type") == "extra_forbidden":
        return 422, f"{turn}: unknown field {field}" if turn else f"unknown field {field}"
    return 422, ", ".join(p for p in (turn, field) if p) + f": {first.get('msg')}"


def _utterance(turn: Turn, number: int) -> Utterance:
    """A turn as the Python API takes one (`turn_utterance`: ends stripped, blank refused); ids default to the
    turn's number."""
    return turn_utterance(turn.model_dump(exclude_none=True), str(number), "request", f"turn {number}")


def to_dialogue(conversation: Conversation, limits: Limits) -> Dialogue:
    """The request's turns as a Dialogue, within the limits (ids default to 1, 2, ...)."""
    turns = conversation.turns
    if len(turns) > limits.max_turns:
        raise RequestRefused(413, f"{len(turns)} turns: more than the limit of {limits.max_turns} (--max-turns)")
    for number, turn in enumerate(turns, start=1):
        if (chars := len(turn.text.strip())) > limits.max_chars:  # counted as labelled: its ends stripped
            raise RequestRefused(413, f"turn {number} has {chars} characters: more than the limit of "
                                      f"{limits.max_chars} (--max-chars)")
    try:
        dialogue = Dialogue("request", tuple(_utterance(turn, n) for n, turn in enumerate(turns, start=1)))
        return check_dialogues([dialogue], "request")[0]
    except DataError as err:
        reason = str(err).removeprefix("request: ")
        numbered = {str(n) for n, turn in enumerate(turns, start=1) if turn.id is None}
        if reason.endswith("duplicate utterance id") and reason.partition(":")[0].removeprefix("utterance ") in numbered:
            reason += " (a turn without an id takes its number: give every turn an id, or none)"
        raise RequestRefused(422, reason) from None


def _answer(kind: str, dialogue: Dialogue, predictions: list[Prediction]) -> Labels:
    return Labels(kind=kind, turns=[LabelledTurn(id=u.id, label=p.label, probs=p.probs)
                                    for u, p in zip(dialogue.utterances, predictions, strict=True)])


def create_app(predictor: Predictor, settings: ServeSettings) -> FastAPI:
    """The app serving one loaded model (erckit.models.load)."""
    # no /docs or /redoc pages: they load their scripts from a CDN, and the server may be offline
    app = FastAPI(title="erckit", summary="Emotion labels for every turn of a conversation", docs_url=None,
                  redoc_url=None)
    batcher = Batcher(predictor, settings.max_batch_utterances)
    limits = settings.limits
    app.state.batcher = batcher
    # a turn's characters at their longest in JSON (12 bytes: an escaped surrogate pair), plus its keys
    max_bytes = limits.max_turns * (12 * (limits.max_chars + 2 * NAME_CHARS) + 128) + 1024
    page = (resources.files(__package__) / "page.html").read_text(encoding="utf-8")

    app.add_middleware(BodyLimit, max_bytes=max_bytes)

    @app.exception_handler(RequestValidationError)
    async def refuse_invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return _error(*_validation_reason(err, request.headers.get("content-type", "")))

    @app.exception_handler(RequestRefused)
    async def refuse(request: Request, err: RequestRefused) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        cause = err.__cause__  # FastAPI says "There was an error parsing the body", whatever the cause: name it
        if isinstance(cause, UnicodeDecodeError):
            return _error(400, f"the body is not UTF-8 JSON: {cause}")
        if isinstance(cause, RecursionError):
            return _error(400, "the body's JSON nests too deeply to read")
        if err.status_code == 400 and cause is not None:
            return _error(400, f"the body cannot be read as JSON: {cause}")
        return _error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def model_error(request: Request, err: Exception) -> JSONResponse:
        return _error(500, f"the model failed: {type(err).__name__}: {err}")

    @app.api_route("/", methods=["GET", "HEAD"], response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return page

    @app.get("/api/info")
    async def info() -> Info:
        return Info(model=Path(predictor.folder).name, kind=predictor.kind, erckit_version=__version__,
                    labels=list(LABELS), colours=COLOURS, limits=limits)

    @app.get("/health")
    @app.head("/health", include_in_schema=False)  # some probes ask with HEAD; one operation in the schema
    async def health() -> dict[str, str]:
        """For a load balancer or an orchestrator's probe: answers once the model is loaded."""
        return {"status": "ok"}

    @app.post("/api/label", responses=REFUSALS)
    async def label(conversation: Conversation) -> Labels:
        """Every turn labelled, the model seeing the whole conversation (as `erckit predict`)."""
        dialogue = to_dialogue(conversation, limits)
        predictions = await asyncio.wrap_future(batcher.submit([dialogue]))
        return _answer(predictor.kind, dialogue, predictions)

    @app.post("/api/live", responses=REFUSALS)
    async def live(conversation: Conversation) -> Labels:
        """The last turn labelled from the turns up to it only (send the conversation so far, one turn more
        each time): the past-only form, for every model kind."""
        dialogue = to_dialogue(conversation, limits)
        predictions = await asyncio.wrap_future(batcher.submit([dialogue], last_only=True))
        return _answer(predictor.kind, Dialogue(dialogue.id, dialogue.utterances[-1:]), predictions)

    return app

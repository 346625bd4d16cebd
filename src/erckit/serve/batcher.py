"""Concurrent requests batched into one model call: a worker thread takes every request waiting while the
model was busy (up to a number of utterances) and labels them together."""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, replace
from itertools import count

from erckit.data import Dialogue, Utterance
from erckit.models import Predictor
from erckit.predictions import from_probabilities


@dataclass
class _Request:
    dialogues: list[Dialogue]
    future: Future
    last_only: bool  # each dialogue's last utterance only (live labelling)


class Batcher:
    """Labels dialogues for many callers with one model; `submit` returns a Future of the predictions."""

    def __init__(self, predictor: Predictor, max_utterances: int) -> None:
        self.predictor = predictor
        self.max_utterances = max_utterances
        self.batches = 0  # model calls so far (tests and the load test read them)
        self._queue: queue.Queue[_Request] = queue.Queue()
        self._held: _Request | None = None  # taken from the queue, over the cap of the batch before: the next one's first
        self._ids = count()
        threading.Thread(target=self._work, name="erckit-batcher", daemon=True).start()

    def submit(self, dialogues: list[Dialogue], *, last_only: bool = False) -> Future:
        """Queue dialogues for labelling; the Future gives one Prediction per utterance, in order (`last_only`:
        one per dialogue, its last utterance's, scored as cheaply as the model can: `Predictor.predict_last`)."""
        future: Future = Future()
        self._queue.put(_Request(dialogues, future, last_only))
        return future

    def _take(self) -> list[_Request]:
        """The first waiting request (blocking), then every other already waiting while they fit in the size cap
        (a request larger than the cap goes alone); requests whose callers gave up (a cancelled Future) are dropped."""
        first, self._held = self._held or self._queue.get(), None
        batch, size = [first], self._size(first)
        while size < self.max_utterances:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                break
            if size + self._size(request) > self.max_utterances:
                self._held = request
                break
            batch.append(request)
            size += self._size(request)
        return [r for r in batch if r.future.set_running_or_notify_cancel()]

    def _size(self, request: _Request) -> int:
        """Utterances the model scores for a request (a live one: its last turns, where the model scores them alone)."""
        if request.last_only and self.predictor.score_last is not None:
            return len(request.dialogues)
        return sum(len(d) for d in request.dialogues)

    def _work(self) -> None:
        while True:
            batch = self._take()
            for last_only in (False, True):  # one model call for the whole dialogues, one for the live ones
                if requests := [r for r in batch if r.last_only == last_only]:
                    self._label(requests, last_only)

    def _label(self, requests: list[_Request], last_only: bool) -> None:
        """Label the requests in one model call; each caller gets its predictions, or the error (the worker goes on)."""
        try:
            renamed = [self._renamed(d) for r in requests for d in r.dialogues]  # ids unique across requests
            probs = (self.predictor.last_probabilities(renamed) if last_only
                     else self.predictor.probabilities(renamed))
            self.batches += 1
            answers, start = [], 0
            for request in requests:
                utterances = [u for d in request.dialogues for u in (d.utterances[-1:] if last_only else d.utterances)]
                answers.append(from_probabilities([u.id for u in utterances], probs[start:start + len(utterances)],
                                                  self.predictor.offsets))
                start += len(utterances)
        except Exception as err:  # noqa: BLE001  (the callers get any error; the worker keeps serving)
            for request in requests:
                request.future.set_exception(err)
            return
        for request, answer in zip(requests, answers, strict=True):
            request.future.set_result(answer)

    def _renamed(self, dialogue: Dialogue) -> Dialogue:
        n = next(self._ids)
        return replace(dialogue, id=f"b{n}", utterances=tuple(
            Utterance(f"b{n}_{i}", u.speaker, u.text) for i, u in enumerate(dialogue.utterances)))

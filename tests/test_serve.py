"""`erckit serve` as a real process on a loopback port: answers equal `erckit predict`'s (whole dialogues and
past-only prefixes), bad requests get a one-line 4xx and the server keeps serving, concurrent requests batch."""

from __future__ import annotations

import http.client
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import erckit
from conftest import REFERENCE_DIALOGUE, SAMPLE_DATA, m3ed_file
from erckit.cli import main
from erckit.config import ConfigError
from erckit.data import DataError
from erckit.formats import jsonl
from test_encoder_model import tiny_encoder  # noqa: F401  (fixture)

TURNS = [{"speaker": speaker, "text": text} for speaker, text in REFERENCE_DIALOGUE]


def request(url: str, body: object | bytes | None = None, content_type: str = "application/json"
            ) -> tuple[int, dict]:
    """(status, JSON answer) of a GET (no body) or a POST (a JSON body by default)."""
    data = body if isinstance(body, bytes) or body is None else json.dumps(body, ensure_ascii=False).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


# `python -m erckit`, with Ctrl-C raising KeyboardInterrupt as in a terminal, even where the tests run with SIGINT
# ignored (a background job): a child inherits that, and the server would then outlive its Ctrl-C
CTRL_C_AS_IN_A_TERMINAL = ("import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                           "from erckit.cli import main; sys.exit(main(sys.argv[1:]))")


class Server:
    """`erckit serve` in a subprocess on a port it chose (--port 0, read from its first line) until closed."""

    def __init__(self, model: Path, *flags: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", CTRL_C_AS_IN_A_TERMINAL, "serve", "--model", str(model), "--port", "0", *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        first = self.process.stdout.readline()
        found = re.search(r" at http://127\.0\.0\.1:(\d+)/ ", first)
        assert found and found[1] != "0", first + self.process.stdout.read()
        self.url = f"http://127.0.0.1:{found[1]}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stdout.read()
            try:
                if request(f"{self.url}/api/info")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("erckit serve did not answer within 60 s")

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def train_model(kind: str, folder: Path, encoder: Path) -> Path:
    extra = [f"encoder.name={encoder}", "encoder.freeze_layers=2", "train.epochs=1", "classifier.gru_hidden=16"
             ] if kind == "bert_bigru" else []
    assert main(["train", "--config", kind, "--out", str(folder), *SAMPLE_DATA,  *extra]) == 0
    assert not (folder / "runs").exists()  # no tracking files unless the recipe asks (test_tracking)
    return folder


# the encoder's server (a tiny encoder trained here, then torch loaded by the server) takes ~10-20 s: slow tier
@pytest.fixture(scope="module", params=["tfidf", pytest.param("bert_bigru", marks=pytest.mark.slow)])
def served(request, tmp_path_factory, tiny_encoder):  # noqa: F811
    model = train_model(request.param, tmp_path_factory.mktemp(request.param) / "model", tiny_encoder)
    server = Server(model, "--max-turns", "40", "--max-chars", "100")
    yield model, server.url
    server.close()


def predict_file(model: Path, dialogues: dict[str, list], tmp_path: Path) -> list[dict]:
    """`erckit predict` on the dialogues: its predictions.jsonl lines, in order."""
    source = m3ed_file(tmp_path / "input.json", {d: [(t["speaker"], t["text"], None) for t in turns]
                                                  for d, turns in dialogues.items()})
    out = tmp_path / "predictions.jsonl"
    assert main(["predict", "--model", str(model), "--input", str(source), "--out", str(out)]) == 0
    return [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]


def test_a_dialogue_over_http_equals_erckit_predict(served, tmp_path):
    model, url = served
    status, answer = request(f"{url}/api/label", {"turns": TURNS})
    assert status == 200 and answer["kind"] == json.loads((model / "erckit_model.json").read_text())["type"]
    expected = predict_file(model, {"d": TURNS}, tmp_path)
    assert [t["id"] for t in answer["turns"]] == [str(i) for i in range(1, len(TURNS) + 1)]
    assert [t["label"] for t in answer["turns"]] == [e["label"] for e in expected]
    for got, want in zip(answer["turns"], expected, strict=True):
        assert got["probs"] == pytest.approx(want["probs"], abs=2e-6)


def test_live_mode_equals_erckit_predict_on_the_past_only_prefixes(served, tmp_path):
    model, url = served
    live = []
    for k in range(1, len(TURNS) + 1):  # one turn more each time
        status, answer = request(f"{url}/api/live", {"turns": TURNS[:k]})
        assert status == 200 and len(answer["turns"]) == 1 and answer["turns"][0]["id"] == str(k)
        live.append(answer["turns"][0])
    lines = predict_file(model, {f"p{k}": TURNS[:k] for k in range(1, len(TURNS) + 1)}, tmp_path)
    last_of_each = [line for line in lines if line["id"].startswith("p") and
                    line["id"].split("_")[-1] == line["id"].split("_")[0][1:]]
    assert len(last_of_each) == len(TURNS)
    assert [t["label"] for t in live] == [e["label"] for e in last_of_each]
    for got, want in zip(live, last_of_each, strict=True):
        assert got["probs"] == pytest.approx(want["probs"], abs=2e-6)
    if json.loads((model / "erckit_model.json").read_text())["type"] == "bert_bigru":
        # the BiGRU reads the whole dialogue: whole-dialogue labels use the future, live ones do not
        whole = request(f"{url}/api/label", {"turns": TURNS})[1]["turns"]
        assert [t["probs"] for t in whole] != [t["probs"] for t in live]


BAD = [
    (b'{"turns": [', 400, "malformed JSON"),
    (b"not json at all", 400, "malformed JSON"),
    ('{"turns": [{"speaker": "A", "text": "café"}]}'.encode("latin-1"), 400,
     "the body is not UTF-8 JSON: 'utf-8' codec can't decode byte 0xe9 in position 40"),
    (b'{"turns": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "the body's JSON nests too deeply to read"),
    (b'{"turns": ' + b"7" * 5000 + b"}", 400, "the body cannot be read as JSON: Exceeds the limit (4300 digits)"),
    ({"turns": [{"speaker": "A", "text": 5}]}, 422, "turn 1, text: Input should be a valid string"),
    ({"turns": [{"speaker": "A", "text": "hi", "colour": "red"}]}, 422, "turn 1: unknown field colour"),
    ({"turns": [{"speaker": "A", "text": "hi"}, {"speaker": "B"}]}, 422, "turn 2, text: Field required"),  # from 1
    ({"turns": "A: hi"}, 422, "turns: Input should be a valid list"),
    ({"turns": []}, 422, "turns: List should have at least 1 item"),
    ({"dialogue": TURNS}, 422, "unknown field dialogue"),
    ([TURNS], 422, "body: Input should be a valid dictionary"),
    ({"turns": [{"speaker": "A", "text": "   "}]}, 422, 'turn 1: "text" is blank'),
    ({"turns": [{"speaker": "A", "text": "a", "id": "x"}, {"speaker": "B", "text": "b", "id": "x"}]}, 422,
     "duplicate utterance id"),
    ({"turns": TURNS * 4}, 413, "44 turns: more than the limit of 40 (--max-turns)"),
    ({"turns": [{"speaker": "A", "text": "好" * 101}]}, 413, "turn 1 has 101 characters: more than the limit of 100"),
    ({"turns": [{"speaker": "A" * 201, "text": "hi"}]}, 422, "turn 1, speaker: String should have at most 200 characters"),
    ({"turns": [{"speaker": "A", "text": "hi", "id": ""}]}, 422, "turn 1, id: String should have at least 1 character"),
    ({"turns": [{"speaker": "A", "text": "hi", "id": " "}]}, 422, 'turn 1: "id" is blank'),
    ({"turns": [{"speaker": " \n ", "text": "hi"}]}, 422, 'turn 1: "speaker" is blank'),
    ({"turns": [{"speaker": "A", "text": "a", "id": "x"}, {"speaker": "B", "text": "b", "id": " x"}]}, 422,
     "duplicate utterance id"),
    ({"turns": [{"speaker": "A", "text": "a", "id": "2"}, {"speaker": "B", "text": "b"}]}, 422,
     "utterance 2: duplicate utterance id (a turn without an id takes its number: give every turn an id, or none)"),
    ({"turns": [{"speaker": "A", "text": "a", "id": "x"}, {"speaker": "B", "text": "b", "id": "x"},
                {"speaker": "C", "text": "c"}]}, 422, "utterance x: duplicate utterance id"),
]


@pytest.mark.parametrize("body, status, reason", BAD, ids=[str(i) for i in range(len(BAD))])
@pytest.mark.parametrize("path", ["/api/label", "/api/live"])
def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(served, body, status, reason, path):
    _, url = served
    got, answer = request(url + path, body)
    assert (got, list(answer)) == (status, ["error"]) and reason in answer["error"] and "\n" not in answer["error"]
    assert "without an id" not in answer["error"] or "without an id" in reason  # the numbering hint only where true
    assert request(f"{url}/api/label", {"turns": TURNS[:2]})[0] == 200


def test_the_character_limit_counts_a_turn_as_labelled_its_ends_stripped(served):
    _, url = served
    got, answer = request(f"{url}/api/label", {"turns": [{"speaker": "A", "text": "  " + "好" * 100 + " \n"}]})
    assert got == 200 and [turn["id"] for turn in answer["turns"]] == ["1"]


@pytest.mark.parametrize("path", ["/api/label", "/api/live"])
def test_a_body_not_sent_as_json_or_empty_is_told_so(served, path):
    _, url = served
    body = json.dumps({"turns": TURNS[:2]}).encode()
    for content_type in ("application/x-www-form-urlencoded", "text/plain"):  # curl -d sends a form
        assert request(url + path, body, content_type) == (415, {"error": f"the body is sent as {content_type}: send "
                                                                       "JSON with Content-Type: application/json"})
    assert request(url + path, b"") == (400, {"error": 'empty body: send the conversation as JSON ({"turns": [...]})'})
    assert request(url + path, body, "application/json; charset=utf-8")[0] == 200
    import http.client
    from urllib.parse import urlsplit

    connection = http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)  # sends no Content-Type of its own
    connection.request("POST", path, body)
    answer = connection.getresponse()
    assert (answer.status, json.loads(answer.read())) == (415, {"error": "the body has no Content-Type: send JSON "
                                                                         "with Content-Type: application/json"})
    connection.close()


def test_info_names_the_model_and_health_answers(served):
    model, url = served
    info = request(f"{url}/api/info")[1]
    assert (info["model"], info["erckit_version"]) == (model.name, erckit.__version__)
    assert info["kind"] == json.loads((model / "erckit_model.json").read_text())["type"]
    assert request(f"{url}/health") == (200, {"status": "ok"})
    with urllib.request.urlopen(urllib.request.Request(f"{url}/health", method="HEAD"), timeout=60) as answer:
        assert answer.status == 200 and answer.read() == b""


def test_speakers_and_ids_are_read_as_the_file_readers_read_them(served):
    """A blank one is refused with the reason a dialogue file gets; the others are stripped, as in a file."""
    _, url = served
    for turn in ({"speaker": " \n ", "text": "hi"}, {"speaker": "A", "text": "hi", "id": "\t"}):
        with pytest.raises(DataError) as refused:
            jsonl.parse(json.dumps({"id": "d", "utterances": [{"id": "1", **turn}]}), "d.jsonl")
        problem = str(refused.value).removeprefix("d.jsonl: line 1, utterance 1: ")
        for path in ("/api/label", "/api/live"):
            assert request(url + path, {"turns": [turn]}) == (422, {"error": f"turn 1: {problem}"})
    padded = [{**TURNS[0], "speaker": " A\n", "id": " x "}, {**TURNS[1], "speaker": "\tB"}]
    plain = [{**TURNS[0], "speaker": "A", "id": "x"}, {**TURNS[1], "speaker": "B"}]
    status, answer = request(f"{url}/api/label", {"turns": padded})
    assert status == 200 and [t["id"] for t in answer["turns"]] == ["x", "2"]
    assert answer == request(f"{url}/api/label", {"turns": plain})[1]


def test_head_is_answered_as_get(served):
    _, url = served
    with urllib.request.urlopen(f"{url}/", timeout=60) as got:
        page, headers = got.read(), got.headers
    with urllib.request.urlopen(urllib.request.Request(f"{url}/", method="HEAD"), timeout=60) as head:
        assert (head.status, head.read()) == (200, b"") and page.startswith(b"<!")
        assert [head.headers[h] for h in ("Content-Type", "Content-Length")] == [
            headers[h] for h in ("Content-Type", "Content-Length")]
    assert request(f"{url}/api/label", {"turns": TURNS[:2]})[0] == 200


@pytest.mark.parametrize("charset", ["", "; charset=latin-1", "; charset=utf-8"])
def test_a_body_that_is_not_utf8_is_refused_saying_so_whatever_charset_it_declares(served, charset):
    _, url = served
    body = json.dumps({"turns": [{"speaker": "A", "text": "Ça va ?"}]}, ensure_ascii=False).encode("latin-1")
    status, answer = request(f"{url}/api/label", body, "application/json" + charset)
    assert (status, answer) == (400, {"error": "the body is not UTF-8 JSON: 'utf-8' codec can't decode byte "
                                               "0xc7 in position 37: invalid continuation byte"})
    assert request(f"{url}/api/label", {"turns": TURNS[:2]})[0] == 200


def post_headers(url: str, header: str, value: str) -> http.client.HTTPConnection:
    """A POST to /api/label whose headers are sent (the body is the caller's)."""
    connection = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
    connection.putrequest("POST", "/api/label")
    connection.putheader("Content-Type", "application/json")
    connection.putheader(header, value)
    connection.endheaders()
    return connection


def refused_413(connection: http.client.HTTPConnection, url: str, reason: str) -> None:
    """The answer is a 413 giving `reason`, and the server goes on serving."""
    response = connection.getresponse()
    assert response.status == 413 and reason in json.loads(response.read())["error"]
    connection.close()
    assert request(f"{url}/api/label", {"turns": TURNS[:2]})[0] == 200


def test_a_body_larger_than_the_limits_allow_is_refused_before_it_is_read(served):
    _, url = served
    connection = post_headers(url, "Content-Length", "2000000")  # declared, never sent
    refused_413(connection, url, "request body of 2000000 bytes")


def test_a_chunked_body_is_refused_once_it_passes_the_limits(served):
    _, url = served
    connection = post_headers(url, "Transfer-Encoding", "chunked")  # no length declared
    chunk = b'{"turns": [' + b" " * 65536
    try:
        for _ in range(64):  # 4 MiB, far more than the limits allow (246 kB); the server stops reading at the limit
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    except OSError:
        pass  # the server answered and closed before the rest was sent
    refused_413(connection, url, "request body over the")


def test_serve_says_its_port_refuses_a_taken_one_in_one_line_and_ends_with_130_on_ctrl_c(served):
    model, url = served
    port = url.rsplit(":", 1)[1]
    taken = subprocess.run([sys.executable, "-m", "erckit", "serve", "--model", str(model), "--port", port],
                           capture_output=True, text=True, timeout=120, check=False)
    assert (taken.returncode, taken.stdout) == (2, "")
    assert taken.stderr == f"erckit serve: error: --host 127.0.0.1 --port {port}: cannot listen there: Address already in use\n"
    server = Server(model)  # its own port, told on its first line (--port 0)
    assert server.url != url
    server.process.send_signal(signal.SIGINT)
    rest = server.process.communicate(timeout=60)[0]
    assert server.process.returncode == 130 and rest == "erckit serve: interrupted: the server stopped; it keeps nothing\n"


def test_unknown_paths_and_methods_are_4xx_too(served):
    _, url = served
    assert request(f"{url}/docs")[0] == 404  # its page would load scripts from a CDN; the schema is served
    schema = request(f"{url}/openapi.json")[1]
    assert schema["paths"].keys() == {"/api/info", "/api/label", "/api/live", "/health"}
    operations = [op["operationId"] for methods in schema["paths"].values() for op in methods.values()]
    assert len(operations) == len(set(operations)) == 4  # one each (HEAD /health is not in the schema)
    for path in ("/api/label", "/api/live"):  # the errors as they are sent: {"error": "..."}, never FastAPI's
        answers = schema["paths"][path]["post"]["responses"]
        assert set(answers) == {"200", "400", "413", "415", "422", "500"}
        assert {a["content"]["application/json"]["schema"]["$ref"] for s, a in answers.items() if s != "200"} == {
            "#/components/schemas/Refusal"}
    assert schema["components"]["schemas"]["Refusal"]["required"] == ["error"]
    assert request(f"{url}/api/nothing")[0] == 404
    assert request(f"{url}/api/label")[0] == 405  # GET


def test_concurrent_requests_each_get_their_own_answer(served):
    _, url = served
    conversations = [TURNS[:k] for k in range(1, len(TURNS) + 1)] * 2
    answers: dict[int, dict] = {}

    def ask(i: int) -> None:
        answers[i] = request(f"{url}/api/label", {"turns": conversations[i]})[1]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(conversations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, conversation in enumerate(conversations):
        alone = request(f"{url}/api/label", {"turns": conversation})[1]
        assert [t["label"] for t in answers[i]["turns"]] == [t["label"] for t in alone["turns"]]
        for got, want in zip(answers[i]["turns"], alone["turns"], strict=True):
            assert got["probs"] == pytest.approx(want["probs"], abs=2e-6)


@pytest.mark.parametrize(("cap", "calls_of"), [
    (1000, [1, 2 + 3 + 4 + 5 + 6]),  # one call for the first, one for the five waiting
    (6, [1, 2 + 3, 4, 5, 6]),  # 4 more would have made 9: it waits for the next call, first
])
def test_the_batcher_labels_requests_waiting_together_in_one_model_call_within_its_cap(
    tmp_path, tiny_encoder, cap, calls_of  # noqa: F811
):
    from erckit.api import to_dialogues
    from erckit.models import Predictor, load
    from erckit.serve.batcher import Batcher

    real = load(train_model("tfidf", tmp_path / "model", tiny_encoder))
    gate, calls = threading.Event(), []

    def score(dialogues, progress):
        calls.append(sum(len(d) for d in dialogues))  # utterances in the call
        gate.wait(30)  # the first call holds the model while the others queue
        return real.probabilities(dialogues)

    batcher = Batcher(Predictor(real.folder, real.kind, score, real.offsets), max_utterances=cap)
    requests = [to_dialogues([TURNS[:k]]) for k in range(1, 7)]  # 1, 2, ..., 6 turns
    first = batcher.submit(requests[0])
    while not calls:
        time.sleep(0.01)
    rest = [batcher.submit(r) for r in requests[1:]]
    gate.set()
    results = [first.result(30), *(future.result(30) for future in rest)]
    assert calls == calls_of and batcher.batches == len(calls_of)
    for dialogues, result in zip(requests, results, strict=True):
        assert result == real.predict(dialogues)


def test_a_caller_that_gave_up_is_skipped_and_the_batcher_keeps_serving(tmp_path, tiny_encoder):  # noqa: F811
    from erckit.api import to_dialogues
    from erckit.models import Predictor, load
    from erckit.serve.batcher import Batcher

    real = load(train_model("tfidf", tmp_path / "model", tiny_encoder))
    gate, calls = threading.Event(), []

    def score(dialogues, progress):
        calls.append(len(dialogues))
        gate.wait(30)
        return real.probabilities(dialogues)

    batcher = Batcher(Predictor(real.folder, real.kind, score, real.offsets), max_utterances=256)
    requests = [to_dialogues([TURNS[:k]]) for k in range(1, 5)]
    first = batcher.submit(requests[0])
    while not calls:
        time.sleep(0.01)
    gone, live = batcher.submit(requests[1]), batcher.submit(requests[2], last_only=True)
    assert gone.cancel()  # its caller gave up while it waited (a timeout, a server shutting down)
    gate.set()
    assert first.result(30) == real.predict(requests[0])
    assert live.result(30) == real.predict_last(requests[2])
    assert batcher.submit(requests[3]).result(30) == real.predict(requests[3])  # the worker is still serving
    assert calls == [1, 1, 1]  # the cancelled request never reached the model


def test_serve_refuses_bad_flags_and_models_in_one_line(tmp_path, capsys):
    assert main(["serve", "--model", str(tmp_path)]) == 2
    assert "not an erckit model folder" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--max-turns", "0"]) == 2
    assert "--max-turns 0: max_turns must be a positive number" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--port", "70000"]) == 2
    assert "--port 70000: port must be 0 to 65535" in capsys.readouterr().err
    assert main(["serve", "--model", str(tmp_path), "--host", ""]) == 2
    assert "host must be an address or a name (0.0.0.0: every network), not empty" in capsys.readouterr().err


def test_the_python_serve_settings_are_checked_as_the_flags_are():
    from erckit.serve import ServeSettings

    with pytest.raises(ValueError, match="max_batch_utterances must be a positive number, not 0"):
        ServeSettings(max_batch_utterances=0)
    for bad, problem in [({"max_turns": 1.5}, "max_turns must be a whole number, not float 1.5"),
                         ({"max_turns": True}, "max_turns must be a whole number, not bool True"),
                         ({"port": "8000"}, "port must be a whole number, not str '8000'"),
                         ({"host": None}, "host must be an address or a name as text, not NoneType None")]:
        with pytest.raises(TypeError, match=re.escape(problem)):  # before any model is loaded
            ServeSettings(**bad)
    assert ServeSettings(port=0).limits.max_turns == 200


def test_a_name_with_several_addresses_is_served_on_each_on_one_port(monkeypatch):
    from erckit import serve

    def two_addresses(host, port, *args, **kwargs):  # as `localhost` on a machine with IPv4 and IPv6
        assert host == "both-loopbacks"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in ("127.0.0.1", "127.0.0.2")]

    monkeypatch.setattr(serve.socket, "getaddrinfo", two_addresses)
    listening = serve.listen("both-loopbacks", 0)
    try:
        bound = [sock.getsockname() for sock in listening]
        assert [address for address, _ in bound] == ["127.0.0.1", "127.0.0.2"]
        assert bound[0][1] != 0 and bound[0][1] == bound[1][1]  # the port the first took, on both
        monkeypatch.undo()
        for address, port in bound:
            socket.create_connection((address, port), timeout=5).close()  # each one listens
        with pytest.raises(ConfigError, match=f"--host 127.0.0.1 --port {bound[0][1]}: cannot listen there: Address "
                                              "already in use"):
            serve.listen("127.0.0.1", bound[0][1])
    finally:
        for sock in listening:
            sock.close()

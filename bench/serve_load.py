"""Load test of `erckit serve` on loopback: N concurrent clients label whole dialogues for a fixed time, with
malformed requests mixed in; compared with `erckit predict` on the same dialogues.

    .venv/bin/python bench/serve_load.py --model runs/encoder_sample --clients 8 --seconds 60

Reports requests/s, utterances/s, p50/p99 latency and errors, whether every malformed request got a 4xx and
the server still answers, and `erckit predict`'s utterances/s (model calls alone, and the whole command).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from itertools import cycle
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
MALFORMED = [
    b'{"turns": [',
    b'{"turns": [{"speaker": "A", "text": 5}]}',
    b'{"turns": [{"speaker": "A", "text": "hi", "extra": 1}]}',
    b'{"turns": []}',
    b'{"dialogue": []}',
    b"[1, 2, 3]",
    b'{"turns": [{"speaker": "A", "text": "' + "长".encode() * 5000 + b'"}]}',
    b'{"turns": [{"speaker": "A", "text": "   "}]}',
    b"\xff\xfe not utf-8",
    b'{"turns": "A: hello"}',
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(connection: http.client.HTTPConnection, path: str, body: bytes) -> tuple[int, bytes]:
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, response.read()


def start_server(model: str, port: int) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-m", "erckit", "serve", "--model", model, "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/info")
            if connection.getresponse().status == 200:
                return process
        except OSError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("erckit serve did not start within 120 s")


def baseline(model: str, data: str) -> dict:
    """`erckit predict` on the data: the model calls alone (loaded once) and the whole command."""
    from erckit.formats import read_dialogues
    from erckit.models import load

    dialogues = read_dialogues(data)
    utterances = sum(len(d) for d in dialogues)
    predictor = load(model)
    predictor.probabilities(dialogues[:1])  # warm-up
    started = time.perf_counter()
    predictor.probabilities(dialogues)
    model_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "erckit", "predict", "--model", model, "--input", data,
                        "--out", str(Path(folder) / "p.jsonl")], check=True, capture_output=True)
        command_seconds = time.perf_counter() - started
    return {"utterances": utterances, "dialogues": len(dialogues),
            "model_utterances_per_s": utterances / model_seconds,
            "command_seconds": command_seconds, "command_utterances_per_s": utterances / command_seconds}


def load_test(port: int, bodies: list[tuple[bytes, int]], clients: int, seconds: float, malformed: int) -> dict:
    stop = time.monotonic() + seconds
    results: list[tuple[float, int, int]] = []  # latency, status, utterances
    failures: list[str] = []
    bad_statuses: list[int] = []
    lock = threading.Lock()

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for body, utterances in cycle(bodies[offset:] + bodies[:offset]):
            if time.monotonic() >= stop:
                break
            started = time.perf_counter()
            try:
                status, _ = post(connection, "/api/label", body)
            except (OSError, http.client.HTTPException) as err:
                with lock:
                    failures.append(repr(err))
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
                continue
            with lock:
                results.append((time.perf_counter() - started, status, utterances))

    def saboteur() -> None:
        for i in range(malformed):
            time.sleep(seconds / (malformed + 1))
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            try:
                status, _ = post(connection, "/api/label" if i % 2 else "/api/live", MALFORMED[i % len(MALFORMED)])
            except (OSError, http.client.HTTPException) as err:
                status = -1
                failures.append(f"malformed {i}: {err!r}")
            bad_statuses.append(status)

    threads = [threading.Thread(target=client, args=(i * 3 % len(bodies),)) for i in range(clients)]
    threads.append(threading.Thread(target=saboteur))
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    ok = [r for r in results if r[1] == 200]
    latencies = np.array([r[0] for r in ok]) * 1000
    return {
        "clients": clients, "seconds": round(elapsed, 1), "requests": len(ok),
        "requests_per_s": len(ok) / elapsed, "utterances_per_s": sum(r[2] for r in ok) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if len(ok) else None,
        "p99_ms": float(np.percentile(latencies, 99)) if len(ok) else None,
        "errors": len(results) - len(ok) + len(failures), "failures": failures[:5],
        "malformed": len(bad_statuses), "malformed_4xx": sum(400 <= s < 500 for s in bad_statuses),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained model folder (the encoder's, for BENCHMARKS.md)")
    parser.add_argument("--data", default=str(REPO / "examples" / "sample" / "annotation_test.json"))
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--malformed", type=int, default=50)
    parser.add_argument("--out", help="also write the figures to this JSON file")
    args = parser.parse_args()

    from erckit.formats import read_dialogues

    dialogues = read_dialogues(args.data)
    bodies = [(json.dumps({"turns": [{"speaker": u.speaker, "text": u.text} for u in d.utterances]},
                          ensure_ascii=False).encode(), len(d)) for d in dialogues]
    reference = baseline(args.model, args.data)
    print(f"erckit predict: {reference['utterances']} utterances in {reference['dialogues']} dialogues; "
          f"model calls {reference['model_utterances_per_s']:.1f} utt/s, whole command "
          f"{reference['command_seconds']:.1f} s ({reference['command_utterances_per_s']:.1f} utt/s)")
    port = free_port()
    server = start_server(args.model, port)
    try:
        result = load_test(port, bodies, args.clients, args.seconds, args.malformed)
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        connection.request("GET", "/api/info")
        result["alive_after"] = connection.getresponse().status == 200 and server.poll() is None
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["vs_predict_model_calls"] = result["utterances_per_s"] / reference["model_utterances_per_s"]
    print(f"serve: {result['clients']} clients, {result['seconds']} s: {result['requests']} requests "
          f"({result['requests_per_s']:.2f}/s), {result['utterances_per_s']:.1f} utt/s "
          f"({result['vs_predict_model_calls']:.2f}x erckit predict's model calls), p50 {result['p50_ms']:.0f} ms, "
          f"p99 {result['p99_ms']:.0f} ms, errors {result['errors']}; malformed {result['malformed_4xx']}/"
          f"{result['malformed']} answered 4xx; server alive after: {result['alive_after']}")
    if args.out:
        Path(args.out).write_text(json.dumps({"predict": reference, "serve": result}, indent=2) + "\n")


if __name__ == "__main__":
    main()

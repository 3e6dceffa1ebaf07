# Every target sets up what it needs: a fresh clone needs only Python 3.11+ and make.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?=
OUT    ?= .
DATA_ARG := $(if $(DATA),--data $(DATA),)

.PHONY: run test demo calibrate benchmark clean

# Core + training extras + test tools, reinstalled only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[train,dev]'
	touch $@

## run: download the real data (or DATA=path) and train the shipped configuration into OUT
run: $(VENV)/.installed
	$(BIN)/lhcbpid train $(DATA_ARG) --out $(OUT)

## test: the whole test suite (small simulated data; a few minutes)
test: $(VENV)/.installed
	$(BIN)/python -m pytest -q

## demo: the main job offline, on 300,000 simulated rows, into demo/
demo: $(VENV)/.installed
	mkdir -p demo
	$(BIN)/lhcbpid simulate --rows 300000 --seed 1 --out demo/training.csv.gz
	$(BIN)/lhcbpid simulate --rows 50000 --seed 2 --kind test --out demo/test.csv.gz
	$(BIN)/lhcbpid train --data demo/training.csv.gz --out demo
	$(BIN)/lhcbpid predict --model demo/particles.onnx --data demo/test.csv.gz --out demo/predict.csv
	$(BIN)/lhcbpid evaluate --model demo/particles.onnx --data demo/test.csv.gz --out demo/evaluation

## calibrate: check the simulator against the real data's statistics and difficulty
calibrate: $(VENV)/.installed
	$(BIN)/lhcbpid simulate --check

## benchmark: ours against the peers on 1.2M simulated rows; rewrites BENCHMARKS.md
benchmark: $(VENV)/.installed
	mkdir -p benchmark
	$(BIN)/lhcbpid simulate --rows 1200000 --seed 7 --out benchmark/training.csv.gz
	$(BIN)/lhcbpid benchmark --data benchmark/training.csv.gz --out benchmark

clean:
	rm -rf $(VENV) demo benchmark .pytest_cache

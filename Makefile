# fgar: `make demo` runs the whole pipeline on the embedded benchmark; `make test` runs the tests.
# Both create the virtual environment first when needed (`make setup`).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fgar-installed
DEMO   ?= demo
# torch/torchvision pair known to work together; users with a GPU may install their own first.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup test demo lint bench clean-demo table1 table2 table4 table5 table6 fig1c tables motion

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/python -m pip install -q $(TORCH_PINS)
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check fgar_cli kernels tests benchmarks
	$(BIN)/ruff format --check fgar_cli kernels tests benchmarks

demo: setup
	PATH="$(abspath $(BIN)):$$PATH" bash examples/demo.sh $(DEMO)

# The paper's tables on the embedded benchmark (fgar reproduce; docs/RESULTS.md). Variables:
# SYNTH_SEEDS (generator seeds, default 11 12 13, none used for development), SPLITS (label split
# seeds, default 0), QUICK=1 (a few minutes of tiny runs that exercise every step), OUT (default
# reproductions: tables in OUT/<table>/, runs in OUT/work/). A rerun continues where one stopped.
REPRO_ARGS = $(if $(QUICK),--quick) $(if $(SYNTH_SEEDS),--synth-seeds "$(SYNTH_SEEDS)") \
	$(if $(SPLITS),--splits "$(SPLITS)") $(if $(OUT),--out-dir "$(OUT)")

table1 table2 table4 table5 table6 fig1c tables: setup
	$(BIN)/fgar reproduce $@ $(REPRO_ARGS)

# Real recorded motion (issue 12): supervised, PL and FinePseudo on the UEA/UCR PickupGestureWiimoteZ
# gestures that the aeon wheel ships, over 3 label splits (examples/motion.sh; MOTION: its run folder).
MOTION ?= runs/motion
motion: setup
	PATH="$(abspath $(BIN)):$$PATH" bash examples/motion.sh $(MOTION)

bench: setup
	$(BIN)/python benchmarks/softdtw.py
	$(BIN)/python benchmarks/decode.py

clean-demo:
	rm -rf $(DEMO)

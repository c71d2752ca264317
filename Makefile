# The README's two commands: `make figure6` and `make test`. Both do all set-up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip
STAMP  := $(VENV)/.installed
OUT    ?= paper_figs/out
JOBS   ?= 2

.PHONY: venv figure6 figure3 appendix-a rule-floor bounds figures test lint bench clean

venv: $(STAMP)

# torch 2.13.0 is pinned and installed first, when the venv lacks torch: an unpinned torch would pull the
# newest build. From PyPI on Linux that pinned wheel is the CUDA build; for the CPU-only build run
# `make TORCH_INDEX=https://download.pytorch.org/whl/cpu test` (or figure6) on a fresh clone.
TORCH_INDEX ?=
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -e ".[dev]"
	touch $(STAMP)

figure6: $(STAMP)
	$(VENV)/bin/hidden-rules figure6 --out $(OUT) --overwrite

# The other theory figures of the package (README: "Command line").
figure3: $(STAMP)
	$(VENV)/bin/hidden-rules figure3 --out $(OUT) --overwrite

appendix-a: $(STAMP)
	$(VENV)/bin/hidden-rules appendix-a --out $(OUT) --overwrite

rule-floor: $(STAMP)
	$(VENV)/bin/hidden-rules rule-floor --out $(OUT) --overwrite

bounds: $(STAMP)
	$(VENV)/bin/hidden-rules bounds --t 0.2 0.4 0.6 0.8 --target both

figures: figure6 figure3 appendix-a rule-floor

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -n $(JOBS) -q

bench: $(STAMP)
	$(PY) benchmarks/figure6_speed.py --trainings --figure6
	$(PY) benchmarks/evaluator.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis

# softsym: `make demo` (set up + demo), `make test` (set up + tests), `make bench` (quick benchmarks),
# `make bench-full` (the full model protocols: hours).
# Set-up installs the CPU wheel torch==2.13.0 first, then the package, so pip never resolves a CUDA build.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.softsym-installed

.PHONY: setup demo test bench bench-full clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) pyproject.toml
	$(PIP) install --disable-pip-version-check -q "torch==2.13.0"
	$(PIP) install --disable-pip-version-check -q -e ".[test,plot]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/softsym demo

test: $(STAMP)
	@$(PY) -m pytest tests -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$status

bench: $(STAMP)
	$(PY) benchmarks/basis_solve.py
	$(PY) benchmarks/any_model.py --quick
	$(PY) benchmarks/nn_speed.py --rounds 3 --build-runs 1
	$(PY) benchmarks/models.py --quick
	$(PY) benchmarks/symmetry_report.py

# hours on 2 cores; resumable: finished runs are kept in benchmarks/results/models-full.jsonl
bench-full: $(STAMP)
	$(PY) benchmarks/models.py --full --jobs 2
	$(PY) benchmarks/any_model.py

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache

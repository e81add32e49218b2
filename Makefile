# Two commands on a fresh machine: `make demo` (the main job on virtual slides) and `make test`.
# Both create .venv and install the project on first use; both are idempotent.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
OUT ?= runs/demo

.PHONY: demo test lint install clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --no-cache-dir -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/magnet demo --out $(OUT)

lint: $(STAMP)
	$(VENV)/bin/ruff check magnet tests bench
	$(VENV)/bin/mypy magnet
	$(VENV)/bin/lint-imports

test: lint
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) runs .pytest_cache .mypy_cache .ruff_cache .import_linter_cache

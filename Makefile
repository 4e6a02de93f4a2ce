# The commands CI runs (.ci/run), for a fresh clone: each target first builds .venv if it is missing or older
# than pyproject.toml.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test lint demo integration-tansu

test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/booking-sessions demo

# The integration tests against the servers that need no setup at all (what `run` and `demo` embed).
integration-tansu: $(STAMP)
	BOOKING_TEST_KAFKA=tansu BOOKING_TEST_POSTGRES=embedded $(BIN)/pytest tests/integration

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

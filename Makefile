# The commands CI runs (.ci/run), for a fresh clone: each target first builds .venv if it is missing or older
# than pyproject.toml.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Every dependency pinned with its hashes (`make lock` writes them): the image installs requirements.lock, the
# virtualenv requirements-dev.lock (the dev extra too). Both resolved for CPython 3.11 on glibc Linux x86_64.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check
COMPILE := $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --python-version 3.11 \
	--python-platform x86_64-manylinux_2_36 --custom-compile-command "make lock"

.PHONY: test lint demo integration-tansu lock bench soak

test: lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: $(STAMP)
	$(BIN)/booking-sessions demo

# The integration tests against the servers that need no setup at all (what `run` and `demo` embed).
integration-tansu: $(STAMP)
	BOOKING_TEST_KAFKA=tansu BOOKING_TEST_POSTGRES=embedded $(BIN)/pytest tests/integration

# The pinned dependencies first, each checked against its hash; then the project itself, editable, adding nothing.
$(STAMP): pyproject.toml $(DEV_LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --require-hashes -r $(DEV_LOCK)
	$(PIP) --no-deps -e .
	touch $@

# Re-resolve after editing the dependencies in pyproject.toml; pins that still fit are kept. Newest versions of
# everything: make lock LOCK_OPTIONS=--upgrade. The runtime lock takes its versions from the dev lock, so the image
# and the tests run the same ones.
lock: $(STAMP)
	$(COMPILE) $(LOCK_OPTIONS) --extra dev -o $(DEV_LOCK)
	$(COMPILE) $(LOCK_OPTIONS) --constraint $(DEV_LOCK) -o $(LOCK)

# The bench and the soak run from a clone (they are not in the wheel): README, Performance.
bench: $(STAMP)
	$(BIN)/python -m bench run

soak: $(STAMP)
	$(BIN)/python -m bench soak

# Two commands for a fresh machine (see README):
#   make serve   set up and run the service on its embedded defaults (open access, localhost only)
#   make test    set up and run the test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup chromium redis serve test lint bench

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: anything installed after it must not pull an unpinned (CUDA) build
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

setup: $(STAMP) chromium redis

# The editor's browser tests drive Debian's chromium through Playwright (which downloads no browser of
# its own). Installed when missing, as root (CI runs as root); apt's package lists may need fetching first.
chromium:
	@command -v chromium >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq chromium || { apt-get update -qq && apt-get install -y -qq chromium; }; }

# The fleet's store (engine --broker redis://...) is tested against a real redis-server, which the tests
# start and stop themselves on a free port. Installed when missing, as chromium is.
redis:
	@command -v redis-server >/dev/null || { \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -qq redis-server || { apt-get update -qq && apt-get install -y -qq redis-server; }; }

# --open-access: a fresh machine has no API keys; without it every request would get 401.
# Only the Python environment: the browser is for the tests.
serve: $(STAMP)
	$(BIN)/engine serve --open-access

test: setup
	$(BIN)/ruff check engine tests bench custom_nodes
	$(BIN)/mypy
	$(BIN)/pytest -q

bench: setup
	$(BIN)/python bench/executor_overhead.py

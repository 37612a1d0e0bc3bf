# nobat: `make serve` runs the server on the demo clinic; `make test` runs every test.
# Both set up what they need on a fresh Debian machine (a .venv; PostgreSQL for the tests).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test test-real lint bench system-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

serve: $(STAMP)
	$(BIN)/nobat serve

system-packages:
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		echo "installing PostgreSQL (Debian) for the tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .

test: $(STAMP) system-packages lint
	$(BIN)/pytest

# The real-Asterisk tier: needs an Asterisk 22 built outside this repository
# (tests/realpbx/README.md); NOBAT_ASTERISK names its binary. Never part of `make test`.
test-real: $(STAMP)
	$(BIN)/pytest tests/realpbx

bench: $(STAMP) system-packages
	$(BIN)/python -m bench.booking_rush
	$(BIN)/python -m bench.ivr_load

# nobat: `make serve` runs the server on the demo clinic; `make test` runs every test.
# Both set up what they need on a fresh Debian machine (a .venv; Debian packages as root).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APT := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq

.PHONY: serve test test-real test-sip lint bench voice-packages test-packages sip-packages

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

# espeak-ng and sox speak the prompts (nobat prompts build).
voice-packages:
	@command -v espeak-ng >/dev/null && command -v sox >/dev/null || \
		{ echo "installing espeak-ng and sox (Debian)"; apt-get update -qq && $(APT) espeak-ng sox; }

# PostgreSQL: the tests start their own server from Debian's binaries. Chromium: the status
# page's tests drive Debian's headless browser through Playwright.
test-packages: voice-packages
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ echo "installing postgresql (Debian)"; apt-get update -qq && $(APT) postgresql; }
	@command -v chromium >/dev/null || \
		{ echo "installing chromium (Debian)"; apt-get update -qq && $(APT) chromium; }

serve: $(STAMP) voice-packages
	-$(BIN)/nobat clinic load clinic.toml
	$(BIN)/nobat prompts build
	$(BIN)/nobat serve

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# Two workers, one a core of the two CI has: the suite waits on sockets and subprocesses
# as much as it computes, and took 20 minutes in one.
test: $(STAMP) test-packages lint
	$(BIN)/pytest -n 2

# SIPp (Debian's sip-tester) plays the SIP tier's phones.
sip-packages:
	@command -v sipp >/dev/null || \
		{ echo "installing sip-tester (Debian)"; apt-get update -qq && $(APT) sip-tester; }

# The real-Asterisk tiers: need an Asterisk 22 with PJSIP built outside this repository
# (tests/realpbx/README.md); NOBAT_ASTERISK names its binary. Never part of `make test`.
# test-real runs the Local-channel tier and the SIP tier; test-sip the SIP tier alone
# (tests/sippbx/README.md).
test-real: $(STAMP) voice-packages sip-packages
	$(BIN)/pytest tests/realpbx tests/sippbx

test-sip: $(STAMP) voice-packages sip-packages
	$(BIN)/pytest tests/sippbx

bench: $(STAMP) test-packages
	$(BIN)/python -m bench.booking_rush
	$(BIN)/python -m bench.booking_writes
	$(BIN)/python -m bench.ivr_load
	$(BIN)/python -m bench.dialer
	$(BIN)/python -m bench.patient_calls

# edgefleet: `make demo` runs the whole system, `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?= -n 2

.PHONY: demo test bench system-deps clean

demo: $(VENV)/.installed
	$(VENV)/bin/edgefleet demo

test: $(VENV)/.installed system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m "not slow"

# Mosquitto (the real broker the tests run) and Chromium (the dashboard's browser tests) from the
# system's packages, when missing. Playwright drives that Chromium; `playwright install` is never run.
system-deps:
	@missing=""; \
	  { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || missing="$$missing mosquitto"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  [ -z "$$missing" ] || { $(SUDO) apt-get update -qq && \
	    $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# On-demand benchmarks: JSON in benchmarks/results/, rows in the README's performance table.
bench: $(VENV)/.installed
	$(VENV)/bin/python -m benchmarks.b1_scoring
	$(VENV)/bin/python -m benchmarks.b5_memory

clean:
	rm -rf $(VENV) .demo .pytest_cache

# edgefleet: `make demo` runs the whole system, `make test` runs every test.
VENV ?= .venv
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?= -n 2

.PHONY: demo test faults bench bench-deps system-deps grpc-descriptor clean

demo: $(VENV)/.installed
	$(VENV)/bin/edgefleet demo

test: $(VENV)/.installed system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS) -m "not slow"

# The whole fault-injection suite: the CI versions and the long ones (`slow`), seeded by EDGEFLEET_FAULT_SEED.
faults: $(VENV)/.installed system-deps
	$(VENV)/bin/pytest $(PYTEST_ARGS) -rP tests/faults

# Mosquitto (the real broker the tests run), Chromium (the dashboard's browser tests), Prometheus (it scrapes
# a server and an agent in the metrics test), ShellCheck and systemd-analyze (the device install script and its
# unit), HAProxy (the load balancer in front of server replicas), nginx (the content cache in front of them),
# PostgreSQL (the store's tests run on it too: tests/support/postgres.py) and NATS server (the three-node MQTT
# broker cluster of the broker failover tests) from the system's packages, when missing.
# Playwright drives that Chromium; `playwright install` is never run.
system-deps:
	@missing=""; \
	  { command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ]; } || missing="$$missing mosquitto"; \
	  [ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	  [ -x /usr/bin/prometheus ] || missing="$$missing prometheus"; \
	  command -v shellcheck >/dev/null || missing="$$missing shellcheck"; \
	  command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	  { command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; } || missing="$$missing haproxy"; \
	  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	  { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; } || missing="$$missing nginx-light"; \
	  { command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ]; } || missing="$$missing nats-server"; \
	  [ -z "$$missing" ] || { $(SUDO) apt-get update -qq && \
	    $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; }

# After an edit of fleet_protocol/grpc_predict_v2.proto: its descriptor module, with protoc from grpcio-tools.
grpc-descriptor: $(VENV)/.installed
	$(VENV)/bin/python -m tests.support.grpc_descriptor

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# On-demand benchmarks: JSON in benchmarks/results/, rows in the README's performance table.
# B2 builds MLServer's own venv (benchmarks/.venv-mlserver) on its first run and reuses it. B4 runs 1,000 devices
# x 2 MB: at 10 MB the bare fan-out drives Mosquitto past its 6 GB memory limit on a 24 GB machine.
bench: $(VENV)/.installed bench-deps
	$(VENV)/bin/python -m benchmarks.b1_scoring
	$(VENV)/bin/python -m benchmarks.b2_serving
	$(VENV)/bin/python -m benchmarks.b3_telemetry
	$(VENV)/bin/python -m benchmarks.b3_pg
	$(VENV)/bin/python -m benchmarks.b3_pg --batch-records 4 --records 200
	$(VENV)/bin/python -m benchmarks.b4_fanout --devices 1000 --mb 2
	$(VENV)/bin/python -m benchmarks.b5_memory
	$(VENV)/bin/python -m benchmarks.b6_capacity
	$(VENV)/bin/python -m benchmarks.b7_hot_swap
	$(VENV)/bin/python -m benchmarks.b8_backlog

# wrk (B2's and B7's load generator) from the system's packages when missing; the `bench` extra (py-spy).
bench-deps: $(VENV)/.bench-installed
	@command -v wrk >/dev/null || { $(SUDO) apt-get update -qq && \
	  $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }

$(VENV)/.bench-installed: $(VENV)/.installed pyproject.toml
	$(VENV)/bin/pip install -q -e '.[bench]'
	touch $@

clean:
	rm -rf $(VENV) .demo .simulate .pytest_cache

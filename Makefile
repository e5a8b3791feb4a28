# Two commands for a newcomer: `make demo` and `make test`. Everything else is what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint typecheck unit system-deps bench bench-load bench-cluster docs clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The embedded default: a real nats-server with the platform's streams, traffic, failures and the exporter.
# Extra flags through DEMO_ARGS, e.g. make demo DEMO_ARGS="--duration 2m --web.listen-address :9999".
DEMO_ARGS ?=
demo: $(BIN)/.installed
	$(BIN)/python -m exporter demo $(DEMO_ARGS)

# Debian's prometheus (promtool) and prometheus-alertmanager for rule tests and the end-to-end test.
system-deps:
	bash scripts/install-system-deps.sh

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed system-deps
	$(BIN)/python -m pytest

test: lint typecheck unit

bench: $(BIN)/.installed
	$(BIN)/python -m bench --output bench/latest.txt

bench-load: $(BIN)/.installed
	$(BIN)/python -m bench.load --output bench/latest-load.txt

bench-cluster: $(BIN)/.installed
	$(BIN)/python -m bench.cluster --output bench/latest-cluster.txt

# Regenerate what is generated: the metric reference, the dashboards, the PrometheusRule.
docs: $(BIN)/.installed
	$(BIN)/python -m exporter.reference > docs/metrics.md
	$(BIN)/python -m exporter.configreference docs/configuration.md
	$(BIN)/python -m dashboards.build
	$(BIN)/python alerts/build_prometheusrule.py

clean:
	rm -rf $(VENV) build dist *.egg-info

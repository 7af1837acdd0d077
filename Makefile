# Two commands on a fresh machine (see README):  make benchmark  |  make test
PYTHON ?= python3.12
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: benchmark test perf clean-venv

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found (pyenv: the .python-version file asks for 3.12)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[test]"
	touch $(STAMP)

benchmark: $(STAMP)
	$(VENV)/bin/python -m benchmarks.run --task usb

test: $(STAMP)
	$(VENV)/bin/lint-imports  # the one-way layers of pyproject.toml [tool.importlinter]
	$(VENV)/bin/python -m pytest -q

perf: $(STAMP)
	$(VENV)/bin/python -m benchmarks.perf.platform_speed --task reach
	$(VENV)/bin/python -m benchmarks.perf.platform_speed --task usb --out results/perf/platform_speed_usb.json
	$(VENV)/bin/python -m benchmarks.perf.demo_throughput
	$(VENV)/bin/python -m benchmarks.perf.policy_speed
	$(VENV)/bin/python -m benchmarks.perf.rpro_step

clean-venv:
	rm -rf $(VENV)

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test install clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements-dev.txt constraints-dev.txt
	$(PIP) install -q -r requirements-dev.txt -c constraints-dev.txt
	-$(VENV)/bin/opt_in_out --opt_out >/dev/null 2>&1  # OpenVINO's telemetry: off in development and CI
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/modelpress auto recipes/auto_digits.yaml -o runs/auto-digits

test: install
	$(PY) -m pytest -q --durations=20

clean:
	rm -rf runs .pytest_cache

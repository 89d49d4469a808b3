VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: run test install system-packages clean

# Debian packages the test suite reads: Fashion-MNIST (reference models) and Chromium (renders the HTML report).
APT_PACKAGES := dataset-fashion-mnist chromium

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml requirements-dev.txt requirements-nodeps.txt constraints-dev.txt
	$(PIP) install -q -r requirements-dev.txt -c constraints-dev.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt -c constraints-dev.txt  # their own pins cannot resolve here
	-$(VENV)/bin/opt_in_out --opt_out >/dev/null 2>&1  # OpenVINO's telemetry: off in development and CI
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/modelpress auto recipes/auto_digits.yaml -o runs/auto-digits

# Installs what is missing when it can (root or passwordless sudo, apt-get); otherwise says what to run.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if ! command -v apt-get >/dev/null; then echo "make: not Debian/Ubuntu; the tests of Fashion-MNIST and the HTML report need: $$missing (or MODELPRESS_FASHION_MNIST=<folder of the IDX files>)" >&2; exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; \
	else echo "make: missing Debian packages: $$missing. Run: sudo apt-get install $$missing" >&2; exit 0; fi; \
	echo "make: installing $$missing (apt-get)"; \
	export DEBIAN_FRONTEND=noninteractive; log=$$(mktemp); \
	{ $$sudo apt-get update -q && $$sudo apt-get install -y -q $$missing; } >$$log 2>&1 || { cat $$log; exit 1; }; rm -f $$log

test: install system-packages
	$(PY) -m pytest -q --durations=20

clean:
	rm -rf runs .pytest_cache

# fnforge: `make train` runs the main job, `make test` the tests; both set up what they need.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-12)

.PHONY: install image selftest test bench lint gc clean-containers

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PIP) install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	rm -f $(VENV)/.installed-* && touch $@

# The sandbox image, from Debian packages (no registry); a no-op when nothing changed.
image: install
	@command -v mmdebstrap >/dev/null || (apt-get update -q && apt-get install -y -q mmdebstrap)
	$(PY) -m sandbox image

selftest: image
	$(PY) -m sandbox selftest

test: install image
	$(PY) -m pytest -q

# Sandbox latency/throughput against docker run/exec, vetting rate, then the embedded model.
bench: install image
	$(PY) -m sandbox bench --out bench.json
	$(MAKE) --no-print-directory model
	$(PY) -m optimizer.bench_llm

lint: install
	$(VENV)/bin/ruff check sandbox optimizer tests
	$(VENV)/bin/mypy sandbox optimizer

gc: install
	$(PY) -m sandbox gc

-include mk/*.mk

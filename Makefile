# fnforge: `make train` runs the main job, `make test` the tests; both set up what they need.
VENV ?= .venv
CONFIG ?= configs/small.toml
RUN ?= runs/small
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements.lock requirements-data.txt | sha256sum | cut -c1-12)

.PHONY: install image selftest test bench lint gc train eval experiment ray-deps

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock requirements-data.txt
	python3 -m venv $(VENV)
	$(PIP) install -q --disable-pip-version-check --require-hashes -r requirements.lock
	$(PIP) install -q --disable-pip-version-check --require-hashes --no-deps -r requirements-data.txt
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

# Sandbox latency/throughput against docker run/exec and vetting rate (under runc, and under
# gVisor when the engine has runsc), then the optimizer and training figures with the embedded
# model. Figures go to bench*.json.
bench: install image model
	$(PY) -m sandbox bench --out bench.json
	@if docker info 2>/dev/null | grep -q runsc; then \
		$(PY) -m sandbox bench --runtime runsc --calls 100 --out bench-runsc.json; \
	else echo "no runsc registered (images/setup-gvisor.sh): gVisor figures skipped"; fi
	$(PY) -m optimizer.llm.bench
	$(PY) -m optimizer.bench --out bench-optimizer.json

# Train a function library on MATH with the embedded model (configs/small.toml, about 15-20
# minutes on 2 cores); RUN already holding a run continues it. `make train RUN=runs/x CONFIG=...`
train: install image model
	@if [ -f $(RUN)/config.json ]; then \
		echo "continuing $(RUN) (a new run: make train RUN=runs/another)"; \
		$(PY) -m optimizer train --resume $(RUN); \
	else $(PY) -m optimizer train --config $(CONFIG) --run-dir $(RUN); fi

# The run's test problems without and with its library, paired; a table and $(RUN)/eval.json.
eval: install image model
	$(PY) -m optimizer eval --run $(RUN)

# The powered experiment (configs/experiment.toml, 1-3 hours on 2 cores): train, evaluate
# at least 150 paired problems, keep the figures under results/experiment with the commit and
# the machine. Interrupted, it continues where it stopped.
EXPERIMENT_RUN ?= runs/experiment
experiment: install image model
	@if [ -f $(EXPERIMENT_RUN)/config.json ]; then $(PY) -m optimizer train --resume $(EXPERIMENT_RUN); \
	else $(PY) -m optimizer train --config configs/experiment.toml --run-dir $(EXPERIMENT_RUN); fi
	$(PY) -m optimizer eval --run $(EXPERIMENT_RUN)
	$(PY) -m optimizer.publish $(EXPERIMENT_RUN) results/experiment --command "make experiment"

# Ray for `--backend ray` (optional; CI installs it to run the Ray tests).
ray-deps: install
	$(PIP) install -q --disable-pip-version-check --require-hashes --no-deps -r requirements-ray.txt

lint: install
	$(VENV)/bin/ruff check sandbox optimizer tests
	$(VENV)/bin/mypy sandbox optimizer tests

gc: install
	$(PY) -m sandbox gc

-include mk/*.mk

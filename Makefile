# omics-risk: two commands set everything up on a fresh machine.
#   make demo   install (once), then run the pipeline on the bundled synthetic demo cohort
#   make test   install (once), then run the test suite
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.omics-risk-installed
DEMO_DIR ?= data/demo
DEMO_N ?= 300
DEMO_SEED ?= 7
DEMO_OUT ?= outputs/demo
PYTEST_ARGS ?= -n 2 --durations=15  # both CI cores (pytest-xdist); the slowest tests are listed at the end

# Exit 0 when DIR holds the synthetic nsclc-postop cohort this generator would make for N and SEED (is_current).
define DEMO_CURRENT
import sys
from omics_risk.data.synthetic import is_current
sys.exit(0 if is_current(sys.argv[1], kind="nsclc-postop", n=int(sys.argv[2]), seed=int(sys.argv[3])) else 1)
endef
export DEMO_CURRENT

# Print the validation report (file argv[1]) in short: its header, one line per kind of problem (file and column) with
# a count and the first message, the totals and where the full report is.
define VALIDATION_SUMMARY
import re, sys
lines = open(sys.argv[1]).read().splitlines()
print(lines[0])
section, groups = None, {}
for line in lines[1:]:
    if re.match(r"(Errors|Warnings) \(\d+\):$$", line):
        section = line[:-1]
    elif line.startswith("Modality coverage"):
        section = None
    elif section and line.startswith("  ") and ": " in line:
        where, message = line.strip().split(": ", 1)
        kind = (section, re.sub(r":\d+", "", where))
        count, first = groups.get(kind, (0, message))
        groups[kind] = (count + 1, first)
for (section, where), (count, first) in groups.items():
    times = f" x{count}" if count > 1 else ""  # validate groups rows of one kind itself ("10 rows (lines ...)")
    text = f"  {section.split()[0].lower()[:-1]}{times} {where}: {first}"
    print(text if len(text) <= 120 else text[:117] + "...")
print(f"{lines[-1]}; the full report is {sys.argv[1]}")
endef
export VALIDATION_SUMMARY

.PHONY: install demo demo-run test lint lock clean-demo help

help:
	@echo "make demo   - install, then generate, validate and model the synthetic demo cohort"
	@echo "make demo-run VENV=DIR - the demo without installing (DIR: a venv with omics-risk installed already)"
	@echo "make test   - install, then run the tests (slow ones included)"
	@echo "make lint   - ruff and the import-direction contracts (pyproject.toml [tool.importlinter])"

# Installing is idempotent: the stamp is newer than pyproject.toml and the lock file after one run.
$(STAMP): pyproject.toml requirements/lock.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q pip==26.3 setuptools==84.2.1 wheel==0.48.0
	@# CPU torch first, pinned, so nothing pulls the CUDA wheels; numpy before pyradiomics (sdist, no build isolation).
	$(PIP) install -q torch==2.13.0 numpy==2.4.6
	$(PIP) install -q --no-build-isolation pyradiomics==3.0.1
	$(PIP) install -q -r requirements/lock.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@touch $(STAMP)
	@echo "installed omics-risk into $(VENV)"

install: $(STAMP)

demo: install
	@$(MAKE) --no-print-directory demo-run

# The demo pipeline without the install step (run `make demo` for both): generate (once), validate, train.
demo-run:
	@# (Re)generate the cohort when it is missing or was made by another version of the synthetic generator.
	@if [ ! -f $(DEMO_DIR)/cohort.yaml ]; then \
	  $(VENV)/bin/omics-risk synth --kind nsclc-postop --n $(DEMO_N) --seed $(DEMO_SEED) --out $(DEMO_DIR); \
	elif ! $(PY) -c "$$DEMO_CURRENT" $(DEMO_DIR) $(DEMO_N) $(DEMO_SEED); then \
	  echo "demo cohort at $(DEMO_DIR) is from another generator version or size: regenerating it"; \
	  $(VENV)/bin/omics-risk synth --kind nsclc-postop --n $(DEMO_N) --seed $(DEMO_SEED) --out $(DEMO_DIR) --overwrite; \
	else echo "demo cohort already at $(DEMO_DIR) (current generator version)"; fi
	@mkdir -p $(DEMO_OUT)
	@echo "validating the cohort: omics-risk validate $(DEMO_DIR)"
	@if ! $(VENV)/bin/omics-risk validate --quiet $(DEMO_DIR) > $(DEMO_OUT)/validation.txt; then \
	  cat $(DEMO_OUT)/validation.txt; echo "the demo cohort breaks the data contract (report above)"; exit 1; fi
	@$(PY) -c "$$VALIDATION_SUMMARY" $(DEMO_OUT)/validation.txt
	@# Extract (cached), then cross-validate the fused model and every baseline, log to MLflow, register the model;
	@# train.py ends with the paths of summary.json and report.html and the command that opens the MLflow UI.
	$(PY) train.py experiment=demo data.root=$(abspath $(DEMO_DIR))

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check src tests bench train.py evaluate.py
	$(VENV)/bin/lint-imports --no-cache

# Re-resolve the pinned set after changing dependencies in pyproject.toml.
lock: install
	$(PIP) freeze --exclude-editable | grep -viE '^(torch|numpy|pyradiomics)==' \
	  | sed '1i # Pinned, resolved dependency set for omics-risk (Python 3.11, CPU torch).\n# torch, numpy and pyradiomics are installed by the Makefile first. Regenerate: make lock' \
	  > requirements/lock.txt

clean-demo:
	rm -rf $(DEMO_DIR)

# A shared MLflow tracking server (PostgreSQL backend, artifacts served through it; docs/tracking_server.md).
# State in .tracking/ (TRACKING_DIR=... to move it); installs Debian's postgresql package when missing (needs root).
.PHONY: tracking-server tracking-server-stop
tracking-server: install
	MLFLOW_BIN=$(abspath $(VENV))/bin/mlflow scripts/tracking_server.sh start

tracking-server-stop:
	scripts/tracking_server.sh stop

# --- notebook (README "Notebook"): install the Jupyter extra ([project.optional-dependencies] notebook), execute
# notebooks/walkthrough.ipynb in place (outputs stored, its runs in the project's MLflow store, mlflow.db here), then
# open it in JupyterLab. NOTEBOOK_OPEN=0 only executes it (what to run before committing a changed notebook).
NOTEBOOK_OPEN ?= 1
.PHONY: notebook
notebook: install
	$(PIP) install -q --no-build-isolation -e '.[notebook]'
	$(PY) notebooks/run_walkthrough.py
	@echo "its runs: $(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --port 5000"
	@if [ "$(NOTEBOOK_OPEN)" = "1" ]; then $(VENV)/bin/jupyter lab notebooks/walkthrough.ipynb; fi

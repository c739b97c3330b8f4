# genlab: `make demo` (the main job) and `make test`. Both set up what they need first;
# set-up is idempotent: a second run installs nothing and goes straight to work.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.genlab-installed
# The course environment, exact versions with hashes, made from pyproject.toml by `make lock`.
LOCK   := requirements/lock.txt
# Debian packages: Fashion-MNIST (the offline dataset), bubblewrap (grading sandbox),
# Chromium (the book's browser test), PostgreSQL (the gradebook of parallel grading runs).
DEBS   := dataset-fashion-mnist bubblewrap chromium postgresql

export GENLAB_PROFILE ?= smoke
# Two test workers or two grading kernels share two cores: one torch thread each
# (several threads per process made the small models 10-20x slower here).
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup system demo test seeds quick lint nbval release book grade bench lock upgrade clean

setup: system $(STAMP)

system:
	@missing=""; for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "warning: missing Debian packages:$$missing (install them as root; tests that need them are skipped)"; \
	  fi; \
	fi

# Everything from the lock, hash-checked; the lock already holds every dependency (--no-deps), and
# torchattacks comes without its requests pin (requirements/overrides.txt). The package itself is
# editable and built with the lock's setuptools, offline.
$(STAMP): pyproject.toml $(LOCK)
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --require-hashes --no-deps -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

# The lock: uv resolves pyproject.toml's package and extras for every platform and Python >= 3.11
# in seconds, with the hashes of every file of each pinned release, from the index alone (pip-tools
# resolves for this machine only and is much slower). pip installs it: pip also finds the wheels
# this machine keeps on disk. `make lock` keeps the pins it can (a new requirement, nothing else
# moves); `make upgrade` moves every pin to the newest release within requirements/constraints.txt.
# Both write environment.yml from the same sources and run `make quick` on the new environment.
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --extra course --extra dev --extra crosscheck \
	--universal --python-version 3.11 --generate-hashes --quiet \
	--override requirements/overrides.txt --constraint requirements/constraints.txt \
	--custom-compile-command "make lock" --output-file $(LOCK)

lock: setup
	$(UV_COMPILE)
	$(PY) tools/environment.py
	$(MAKE) quick

upgrade: setup
	$(UV_COMPILE) --upgrade
	$(PY) tools/environment.py
	$(MAKE) quick

release: setup
	$(PY) -m autograder.release

book: setup
	$(PY) book/build.py

# One driver, one Ray cluster for every assignment; JOBS submissions at once (RAY_ADDRESS: an existing cluster).
# Every assignment is graded whatever happens to the others; the summary at the end names what needs
# attention and the exit status is non-zero then.
JOBS ?= 2
ASSIGNMENTS := $(basename $(notdir $(wildcard assignments/*.toml)))
grade: setup
	$(PY) -m autograder.grade $(ASSIGNMENTS) --jobs $(JOBS)

# --samples: the grader checks its own grades (source solutions full marks, the release none, each
# round of typical mistakes exactly its tests) and fails naming the chapter otherwise.
demo: release book
	@$(PY) -m autograder.grade $(ASSIGNMENTS) --samples --jobs $(JOBS); code=$$?; \
	echo "book: $(CURDIR)/book/_build/html/index.html"; exit $$code

# Each chapter's source notebook runs once: tests/test_book.py executes it (hidden tests included,
# as nbval would, in the smoke profile) and the book is built from that execution.
test: setup lint
	$(PY) -m pytest -n 2 --dist loadfile --durations=20 tests

# Every check's verdicts under 200 seeds (make test tries 24): after changing a check or its inputs.
seeds: setup
	GENLAB_VERDICT_SEEDS=200 $(PY) -m pytest -n 2 -k verdicts_do_not_depend_on_the_seed tests

# The maintainer's quick subset: lint, format, types, then the unit tests (no notebook execution,
# no grading run).
quick: setup lint
	$(PY) -m pytest -n 2 -m "not slow" tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# nbval on every source notebook (make test checks the same through the book's one execution).
nbval: setup
	$(PY) -m pytest -n 2 --nbval-lax --nbval-current-env source

bench: setup
	@for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf book/_build book/chapters submitted autograded feedback gradebook.db grades.csv test-output

# genlab: `make demo` (the main job) and `make test`. Both set up what they need first;
# set-up is idempotent: a second run installs nothing and goes straight to work.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.genlab-installed
# Debian packages: Fashion-MNIST (the offline dataset), bubblewrap (grading sandbox),
# Chromium (the book's browser test), PostgreSQL (the gradebook of parallel grading runs).
DEBS   := dataset-fashion-mnist bubblewrap chromium postgresql

export GENLAB_PROFILE ?= smoke
# Two test workers or two grading kernels share two cores: one torch thread each
# (several threads per process made the small models 10-20x slower here).
export OMP_NUM_THREADS ?= 1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: setup system demo test quick nbval release book grade bench clean

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

$(STAMP): pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  echo "python3 -m venv failed; installing python3-venv"; \
	  apt-get install -y -qq python3-venv >/dev/null && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[course]"
	touch $@

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
test: setup
	$(PY) -m pytest -n 2 --dist loadfile tests

# The maintainer's quick subset: unit tests only (no notebook execution, no grading run).
quick: setup
	$(PY) -m pytest -n 2 -m "not slow" tests

# nbval on every source notebook (make test checks the same through the book's one execution).
nbval: setup
	$(PY) -m pytest -n 2 --nbval-lax --nbval-current-env source

# torchattacks (the reference of the PGD benchmark) pins requests~=2.25, which conflicts with the
# course's packages; everything it imports is already installed, so it comes without its pins.
bench: setup
	@$(PY) -c "import torchattacks" 2>/dev/null || $(PY) -m pip install -q --no-deps torchattacks==3.5.1
	@for f in benchmarks/bench_*.py; do $(PY) $$f || exit 1; done

clean:
	rm -rf book/_build book/chapters submitted autograded feedback gradebook.db grades.csv test-output

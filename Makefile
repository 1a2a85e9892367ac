# Two entry points for a newcomer (see README):
#   make tables   set up .venv and run the whole pipeline on the embedded default (digits)
#   make test     set up .venv and run the test suite
# Both are idempotent: the environment is rebuilt only when pyproject.toml changes.
PYTHON ?= python3
VENV := .venv
# The PyTorch build on this machine's disk; clusters override it with their own CUDA build:
#   make tables TORCH_SPEC="torch torchvision --index-url ..."
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml Makefile | sha256sum | cut -c1-12)
BIN := $(VENV)/bin
export DVC_NO_ANALYTICS := 1

.PHONY: setup tables test bench e2e-real-size clean-results

$(STAMP):
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/pip install -q --disable-pip-version-check -e '.[workflow,test]'
	@rm -f $(VENV)/.installed-* && touch $@

setup: $(STAMP)

tables: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake -c2 all_tables
	@echo "Tables, figure and comparisons: results/tables/digits/"

test: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest -q -ra --durations=15

bench: setup
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python bench/bench_certify.py

# The stand-in end-to-end tests at the paper's model sizes (docs/standin.md)
e2e-real-size: setup
	PATH=$(CURDIR)/$(BIN):$$PATH DIFFSMOOTH_E2E_REAL_SIZE=1 $(BIN)/python -m pytest -q -s -m slow tests/test_standin_e2e.py

clean-results:
	rm -rf results/digits results/digits-fast results/tables .snakemake

# Two commands matter: `make demo` and `make test`. Both set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow lint bench install schema clean constraints contract contract-prepare

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch is pinned to 2.13.0 in the `local` extra: the CPU wheel, not a multi-GB CUDA build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m orchestrator.cli.demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/python docker/lock.py check  # every pip install after torch's uses the lock

test: lint
	$(BIN)/python -m orchestrator.cli.schema --check
	# Two xdist workers (--dist load): most tests wait on subprocesses and sockets; a third worker
	# on a 2-core runner starves the tests that train against a wall-clock budget.
	$(BIN)/pytest -q -n 2 --dist load

# The kill-anywhere soak: a tiny job killed at 20 points across every stage (about 6 min).
test-slow: $(STAMP)
	$(BIN)/pytest -q -s -m soak  # -s: the run prints its summary line

bench: $(STAMP)
	$(BIN)/python -m bench

# The real diffusion-pipe on the CPU through the production training stage, six scenarios
# (tests/contract). DIFFUSION_PIPE_DIR: a checkout with its submodules; CONTRACT_VENV: the
# trainer's venv (default: next to the checkout). `make contract-prepare` makes both in .contract/.
contract: $(STAMP)
	DIFFUSION_PIPE_DIR="$(DIFFUSION_PIPE_DIR)" CONTRACT_VENV="$(CONTRACT_VENV)" \
		$(BIN)/pytest -q -s -p no:cacheprovider -m contract tests/contract

contract-prepare:
	contract/prepare.sh .contract

# The image's lock, docker/constraints.txt: diffusion-pipe's requirements at the Dockerfile's
# commit (from DIFFUSION_PIPE_DIR, a checkout or its git dir, else GitHub), the Dockerfile's torch
# pins and the worker extra, resolved for linux x86_64 / Python 3.12 by uv (installed on demand).
UV_VERSION := 0.13.9
DP_COMMIT = $(shell sed -n 's/^ARG DIFFUSION_PIPE_COMMIT=//p' Dockerfile)
constraints: $(STAMP)
	test -x $(BIN)/uv || $(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	if [ -n "$(DIFFUSION_PIPE_DIR)" ]; then git -C "$(DIFFUSION_PIPE_DIR)" show $(DP_COMMIT):requirements.txt; \
	else curl -fsSL https://raw.githubusercontent.com/tdrussell/diffusion-pipe/$(DP_COMMIT)/requirements.txt; \
	fi > $(VENV)/dp-requirements.txt
	$(BIN)/python docker/lock.py inputs $(VENV)/dp-requirements.txt
	$(BIN)/uv pip compile docker/constraints.in -o docker/constraints.txt --quiet \
		--python-version 3.12 --python-platform x86_64-manylinux_2_39 --custom-compile-command "make constraints"

schema: $(STAMP)
	$(BIN)/python -m orchestrator.cli.schema

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis

# qwenvl-train developer targets. `make test` installs on first use (stamp file), then runs the suite.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.stamp-install
PYTEST_ARGS ?=

.PHONY: install test test-fast lint format clean merge demo serve

install: $(STAMP)

# torch==2.13.0 is pinned in the SAME pip call as everything else so no package can pull a CUDA torch.
$(STAMP): requirements.lock setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# The suite without the multi-process (torchrun) tests marked slow: for development; CI runs `make test`.
test-fast: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

format: $(STAMP)
	$(VENV)/bin/ruff format src tests
	$(VENV)/bin/ruff check --fix src tests

# make merge ADAPTER=output_qwen_lora OUTPUT=qwen-vl-chat-merged [BASE=/models/Qwen-VL-Chat] [MERGE_ARGS="--dtype bf16"]
merge: $(STAMP)
	$(if $(and $(ADAPTER),$(OUTPUT)),,$(error usage: make merge ADAPTER=DIR OUTPUT=DIR [BASE=DIR] [MERGE_ARGS="..."]))
	$(PY) -m qwenvl_train merge --adapter "$(ADAPTER)" --output "$(OUTPUT)" $(if $(BASE),--base "$(BASE)") $(MERGE_ARGS)

# make demo [DEMO_OUT=runs/demo] [DEMO_STEPS=N|small] [DEMO_ARGS="--seed 1"]: the whole product on a small model,
# offline (see README); DEMO_STEPS=small is the shortened variant CI runs.
DEMO_OUT ?= runs/demo
demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-2} $(PY) -m qwenvl_train demo --out "$(DEMO_OUT)" $(if $(DEMO_STEPS),--steps $(DEMO_STEPS)) $(DEMO_ARGS)

# make serve MODEL=DIR [SERVE_ARGS="--port 8080 --api-key KEY"]: the OpenAI-compatible API and the chat page.
serve: $(STAMP)
	$(if $(MODEL),,$(error usage: make serve MODEL=DIR [SERVE_ARGS="..."]))
	$(PY) -m qwenvl_train serve --model "$(MODEL)" $(SERVE_ARGS)

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache .ruff_cache

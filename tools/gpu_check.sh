#!/usr/bin/env bash
# GPU check: build a BERT-base-shaped model (random weights) for ort-cuda FP32 / FP16 and INT8 (refused by
# ort-cuda; ort-trt and tensorrt where TensorRT exists), show which execution provider really runs each
# artifact, compare outputs with FP32 on the CPU and print batch 1/8/32 latency at sequence 128.
#
#   tools/gpu_check.sh [WORK_DIR]          (default build/gpu_check; the model is reused between runs)
#   env: PY (.venv/bin/python), QDQ (the qdq beside PY), LAYERS 12, HIDDEN 768, HEADS 12, SEQ 128,
#        BATCHES ("1 8 32" on a GPU, "1 8" without), RUNS (50 on a GPU, 2 without), CALIB_N 16
#
# On a machine without an NVIDIA GPU and onnxruntime-gpu it still runs: the ort-cuda rows load with
# --allow-fallback on the CPU provider and say CPU-FALLBACK, and their latencies are CPU numbers.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
QDQ=("${QDQ:-$(dirname "$PY")/qdq}")
WORK=${1:-build/gpu_check}
LAYERS=${LAYERS:-12} HIDDEN=${HIDDEN:-768} HEADS=${HEADS:-12} SEQ=${SEQ:-128}
CALIB_N=${CALIB_N:-16}
export HF_HUB_OFFLINE=1
mkdir -p "$WORK"

step() { printf '\n== %s\n' "$*"; }

GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && \
   "$PY" -c 'import onnxruntime as o, sys; sys.exit("CUDAExecutionProvider" not in o.get_available_providers())'; then
  GPU=1
fi
TRT=0
"$PY" -c 'import tensorrt' >/dev/null 2>&1 && TRT=1
# without a GPU every row runs on the CPU: BERT-base at batch 32 takes seconds per run there
RUNS=${RUNS:-$([ $GPU = 1 ] && echo 50 || echo 2)}
BATCHES=${BATCHES:-$([ $GPU = 1 ] && echo "1 8 32" || echo "1 8")}

step "machine"
"$PY" -c 'import onnxruntime as o; print("onnxruntime", o.__version__, "providers:", ", ".join(o.get_available_providers()))'
if [ $GPU = 1 ]; then
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
else
  echo "NO GPU: no NVIDIA GPU with onnxruntime-gpu here. The ort-cuda rows below run on the CPU provider"
  echo "(--allow-fallback) and are labelled CPU-FALLBACK; their latencies are CPU numbers, not GPU ones."
fi
if [ $TRT = 1 ]; then
  "$PY" -c 'import tensorrt; print("TensorRT", tensorrt.__version__)'
else
  echo "TensorRT: not importable (its libraries come from NVIDIA's own index, pip install 'qdq[tensorrt]' on a GPU"
  echo "machine); the ort-trt row shows Engine.load's error, the tensorrt engine is not built."
fi

step "model: BERT-shaped, $LAYERS layers, hidden $HIDDEN, random weights"
FOLDER=$("$PY" tools/gpu_check.py model --work "$WORK" --layers "$LAYERS" --hidden "$HIDDEN" --heads "$HEADS") || exit 1
if [ ! -f "$WORK/bert.onnx" ]; then
  "${QDQ[@]}" export --model "$FOLDER" -o "$WORK/bert.onnx" || exit 1
fi
if [ ! -f "$WORK/bert.int8.onnx" ]; then
  "${QDQ[@]}" calibrate "$WORK/bert.onnx" --data builtin:text -n "$CALIB_N" -o "$WORK/calib.json" >/dev/null || exit 1
  "${QDQ[@]}" quantize "$WORK/bert.onnx" --calib "$WORK/calib.json" --target tensorrt -o "$WORK/bert.int8.onnx" \
    >/dev/null || exit 1
  echo "INT8 QDQ (--target tensorrt, symmetric): $WORK/bert.int8.onnx"
fi

rm -rf "$WORK/fp32" "$WORK/fp16" "$WORK/int8" "$WORK/trt" "$WORK/engine"
mkdir -p "$WORK/fp32" "$WORK/fp16" "$WORK/int8" "$WORK/trt"
SHAPES="input_ids:1x$SEQ,8x$SEQ,32x$SEQ"

step "build ort-cuda --precision fp32"
"${QDQ[@]}" build "$WORK/bert.onnx" --target ort-cuda --precision fp32 -o "$WORK/fp32" || exit 1
step "build ort-cuda (fp16, the default)"
"${QDQ[@]}" build "$WORK/bert.onnx" --target ort-cuda -o "$WORK/fp16" || exit 1
"${QDQ[@]}" inspect "$WORK/fp16/bert.cuda.onnx" | grep -E '^(size|ops)'
step "build ort-cuda from the INT8 QDQ model (expected: refused)"
"${QDQ[@]}" build "$WORK/bert.int8.onnx" --target ort-cuda -o "$WORK/int8"
rc=$?
echo "exit status $rc; files written: $(ls -A "$WORK/int8" | wc -l)"
step "build ort-trt (INT8 + TensorRT FP16)"
"${QDQ[@]}" build "$WORK/bert.int8.onnx" --target ort-trt --shapes "$SHAPES" -o "$WORK/trt" || echo "(ort-trt build failed)"
if [ $TRT = 1 ]; then
  step "build tensorrt (native engine)"
  mkdir -p "$WORK/engine"
  "${QDQ[@]}" build "$WORK/bert.int8.onnx" --target tensorrt --shapes "$SHAPES" -o "$WORK/engine/bert.engine" \
    || echo "(tensorrt build failed)"
fi

step "providers, outputs vs CPU FP32, latency p50 (sequence $SEQ, $RUNS runs per batch)"
GPU_FLAG=()
[ $GPU = 1 ] && GPU_FLAG=(--gpu)
# shellcheck disable=SC2086
"$PY" tools/gpu_check.py run --work "$WORK" --batches $BATCHES --sequence "$SEQ" --runs "$RUNS" "${GPU_FLAG[@]}"

"""NNCF post-training quantization of an ONNX model, run in NNCF's own venv by the benchmarks.

    /tmp/nncf/bin/python tools/nncf_quantize.py model.onnx calib.npy out.onnx            # image model
    /tmp/nncf/bin/python tools/nncf_quantize.py model.onnx calib.npz out.onnx --transformer

``calib.npy``: float32 samples for the model's first input; ``calib.npz``: arrays keyed by input name.
Samples are fed one at a time (axis 0). ``--transformer``: NNCF's ``ModelType.TRANSFORMER`` preset.
"""
from __future__ import annotations

import sys

import nncf
import numpy as np
import onnx


def main() -> None:
    src, data, dst = sys.argv[1:4]
    model = onnx.load(src)
    if data.endswith(".npz"):
        arrays = dict(np.load(data))
    else:
        arrays = {model.graph.input[0].name: np.load(data)}
    n = len(next(iter(arrays.values())))
    samples = [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(n)]
    kwargs = {"model_type": nncf.ModelType.TRANSFORMER} if "--transformer" in sys.argv[4:] else {}
    q = nncf.quantize(model, nncf.Dataset(samples), subset_size=n, **kwargs)
    onnx.save(q, dst)


if __name__ == "__main__":
    main()

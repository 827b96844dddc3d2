"""NNCF post-training quantization of an ONNX image model (run in NNCF's own venv by tools/bench_cnn.py).

    /tmp/nncf/bin/python tools/bench_cnn_nncf.py model.onnx calib.npy out.onnx

``calib.npy``: float32 NCHW calibration images, already normalized; fed one at a time as the
model's first input.
"""
from __future__ import annotations

import sys

import nncf
import numpy as np
import onnx


def main() -> None:
    src, data, dst = sys.argv[1:4]
    model = onnx.load(src)
    name = model.graph.input[0].name
    x = np.load(data)
    dataset = nncf.Dataset([x[i:i + 1] for i in range(len(x))], lambda item: {name: item})
    q = nncf.quantize(model, dataset, subset_size=len(x))
    onnx.save(q, dst)


if __name__ == "__main__":
    main()

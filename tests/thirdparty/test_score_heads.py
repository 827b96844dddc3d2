"""Score heads stay float: a detector's class logits (YOLOv8's head, in miniature) whose positive values,
the objects, never occur in the calibration data."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from click.testing import CliRunner

import graphs
from converter.cli import main

HW = 16


def _calibration(folder: Path, rng: np.random.Generator) -> Path:
    """Backgrounds: channel 0 or channel 1 bright in places, never both at one place (class logit <= -2)."""
    folder.mkdir()
    for i in range(8):
        x = rng.uniform(0, 0.3, (4, 3, HW, HW)).astype(np.float32)
        x[:, i % 2, 4:10, 4:10] = 1.0
        np.savez(folder / f"{i:03d}.npz", image=x)
    return folder


def test_class_logits_beyond_calibration_keep_their_scores(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    src = graphs.save(graphs.yolo_head(HW), tmp_path, "fp32.onnx")
    out = tmp_path / "int8.onnx"
    res = CliRunner().invoke(main, ["quantize", str(src), "--data", str(_calibration(tmp_path / "calib", rng)),
                                    "--no-speed-check", "-o", str(out)])
    assert res.exit_code == 0, res.output
    q = onnx.load(str(out))
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    assert quantized, "nothing quantized"
    assert not quantized & {"cls", "box", "joined"}, quantized  # the score head and its Concat stay float
    image = rng.uniform(0, 0.3, (2, 3, HW, HW)).astype(np.float32)
    image[:, :2, 6:9, 6:9] = 1.0  # an object: channels 0 and 1 bright together, logit +2
    ref = ort.InferenceSession(str(src)).run(None, {"image": image})[0]
    got = ort.InferenceSession(str(out)).run(None, {"image": image})[0]
    assert ref[:, 4].max() > 0.85  # FP32 finds it (sigmoid(2) = 0.88)
    np.testing.assert_allclose(got[:, 4:], ref[:, 4:], atol=0.05)  # quantized to [.., 0]: capped at 0.5
    np.testing.assert_allclose(got[:, :4], ref[:, :4], atol=0.5)  # boxes in pixels (stride 8)

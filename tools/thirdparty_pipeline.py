"""Runs one package's own pipeline on a list of inputs, inside that package's venv (no qdq import).

    <venv>/bin/python tools/thirdparty_pipeline.py PIPELINE --inputs list.json --out result.json
        [--model ROLE=PATH ...] [--capture DIR]

PIPELINE is ``rapidocr`` (roles det, cls, rec), ``nudenet`` (role det) or ``magika`` (role model). ``--model``
swaps a role's ONNX file (the rest stay the package's FP32 files). ``--capture DIR`` saves every feed the
pipeline gives ONNX Runtime as ``DIR/<model stem>/<n>.npz``: the model's real inputs, preprocessed by the
package itself (calibration data and held-out feeds for the sweep).
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort


TYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32, "tensor(int64)": np.int64,
         "tensor(uint8)": np.uint8, "tensor(float16)": np.float16}


def install_capture(folder: Path) -> None:
    """Wrap ``InferenceSession.run`` so each call's feeds land in ``folder/<stem>/<n>.npz``."""
    original = ort.InferenceSession.run
    counts: dict[str, int] = {}

    def run(self, output_names, input_feed, run_options=None):  # noqa: ANN001
        stem = Path(str(getattr(self, "_model_path", "model"))).stem
        n = counts.get(stem, 0)
        counts[stem] = n + 1
        out = folder / stem
        out.mkdir(parents=True, exist_ok=True)
        types = {i.name: TYPES.get(i.type) for i in self.get_inputs()}  # as the session will take them
        np.savez(out / f"{n:05d}.npz", **{k: np.asarray(v, dtype=types.get(k)) for k, v in input_feed.items()})
        return original(self, output_names, input_feed, run_options)

    ort.InferenceSession.run = run


def run_rapidocr(inputs: list[str], models: dict[str, str]) -> list[dict]:
    from rapidocr_onnxruntime import RapidOCR

    kwargs = {f"{role}_model_path": path for role, path in models.items()}
    engine = RapidOCR(**kwargs)
    rows = []
    for path in inputs:
        result, _ = engine(path)
        lines = [{"box": np.asarray(box).tolist(), "text": text, "score": float(score)}
                 for box, text, score in (result or [])]
        rows.append({"input": path, "lines": lines})
    return rows


def run_nudenet(inputs: list[str], models: dict[str, str]) -> list[dict]:
    from nudenet import NudeDetector

    detector = NudeDetector(model_path=models.get("det"))
    return [{"input": path, "boxes": [{"class": d["class"], "score": float(d["score"]),
                                        "box": [float(v) for v in d["box"]]} for d in detector.detect(path)]}
            for path in inputs]


def run_magika(inputs: list[str], models: dict[str, str]) -> list[dict]:
    import magika
    from magika import Magika

    model_dir = None
    if "model" in models:  # Magika loads <model_dir>/model.onnx beside its config: a folder with the swapped file
        pkg = Path(magika.__file__).parent / "models"
        default = next(p.parent for p in pkg.rglob("model.onnx"))
        model_dir = Path(tempfile.mkdtemp(prefix="magika_"))
        for f in default.iterdir():
            if f.name != "model.onnx":
                shutil.copy(f, model_dir / f.name)
        (model_dir / "model.onnx").symlink_to(Path(models["model"]).resolve())
    m = Magika(model_dir=model_dir) if model_dir else Magika()
    rows = []
    for path, res in zip(inputs, m.identify_paths([Path(p) for p in inputs])):
        pred = res.prediction
        rows.append({"input": path, "dl": str(pred.dl.label), "output": str(pred.output.label),
                     "score": float(pred.score)})
    return rows


PIPELINES = {"rapidocr": run_rapidocr, "nudenet": run_nudenet, "magika": run_magika}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pipeline", choices=sorted(PIPELINES))
    p.add_argument("--inputs", type=Path, required=True, help="JSON list of input file paths")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--model", action="append", default=[], help="ROLE=PATH: swap this role's ONNX file")
    p.add_argument("--capture", type=Path, help="save every feed given to ONNX Runtime under this folder")
    args = p.parse_args()
    if args.capture:
        install_capture(args.capture)
    models = dict(item.split("=", 1) for item in args.model)
    rows = PIPELINES[args.pipeline](json.loads(args.inputs.read_text()), models)
    args.out.write_text(json.dumps(rows))


if __name__ == "__main__":
    main()

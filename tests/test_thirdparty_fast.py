"""The third-party sweep's fast subset (``tools/thirdparty.py``): a real ONNX file another tool exported.

``tests/assets/thirdparty/ch_ppocr_mobile_v2.0_cls_infer.onnx`` is PP-OCR's text-direction classifier as the
``rapidocr-onnxruntime`` 1.4.4 wheel ships it (paddle2onnx, opset 11, weights as Constant nodes, dynamic H/W;
PaddleOCR / RapidOCR, Apache-2.0; 0.6 MB). Inputs are real: text lines rendered with DejaVuSans (half of them
upside down, the classifier's two classes), preprocessed the way rapidocr does (BGR, height 48, keep ratio, pad
to width 192, (x/255 - 0.5) / 0.5); calibration and evaluation lines are disjoint.

``qdq quantize`` (defaults) must write a model ONNX Runtime loads, whose output keeps a mean cosine of at least
0.98 to FP32 and the same class on at least 90 % of the held-out lines (measured on AVX-512 VNNI: cosine
0.99+ and 100 %; the bounds leave room for AVX2's 7-bit weights).
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from converter.cli import main

CLS = Path(__file__).resolve().parent / "assets" / "thirdparty" / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
WORDS = "invoice total paid date river station market 2024 $19.99 12:30 model tensor scale batch open".split()
COSINE, AGREEMENT = 0.98, 0.9


def _font(size: int):
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"), size)


def lines(seed: int, n: int) -> list:
    """``n`` text-line images (PIL, RGB), every other one rotated by 180 degrees."""
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))
        font = _font(rng.randint(20, 36))
        box = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox((0, 0), text, font=font)
        bg = tuple(rng.randint(180, 255) for _ in range(3))
        img = Image.new("RGB", (box[2] + 12, box[3] + 10), bg)
        ImageDraw.Draw(img).text((6, 4), text, fill=tuple(rng.randint(0, 70) for _ in range(3)), font=font)
        out.append(img.rotate(180) if i % 2 else img)
    return out


def rapidocr_cls_feed(img) -> np.ndarray:
    """rapidocr's TextClassifier.resize_norm_img: BGR, height 48, keep ratio (at most 192 wide), zero pad."""
    from PIL import Image

    w = min(192, int(np.ceil(48 * img.width / img.height)))
    arr = np.asarray(img.resize((w, 48), Image.BILINEAR), dtype=np.float32)[..., ::-1]
    out = np.zeros((3, 48, 192), np.float32)
    out[:, :, :w] = (arr.transpose(2, 0, 1) / 255 - 0.5) / 0.5
    return out


@pytest.fixture(scope="module")
def feeds(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("ppocr_cls")
    calib, images = root / "calib", root / "images"
    calib.mkdir()
    images.mkdir()
    for i, img in enumerate(lines(1, 8)):
        np.savez(calib / f"{i:03d}.npz", x=rapidocr_cls_feed(img)[None])
        img.save(images / f"{i:03d}.png")
    held_out = np.stack([rapidocr_cls_feed(img) for img in lines(2, 16)])
    return {"root": root, "calib": calib, "images": images, "eval": held_out}


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _assert_close(out: Path, x: np.ndarray) -> None:
    ref, got = _outputs(CLS, x), _outputs(out, x)  # the INT8 model must load and run in ONNX Runtime
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    assert len(set(ref.argmax(1))) == 2, "held-out lines should cover both directions"
    assert cos.mean() >= COSINE, f"mean cosine {cos.mean():.4f} < {COSINE}"
    assert agree >= AGREEMENT, f"class agreement {agree:.3f} < {AGREEMENT}"


def _quantize(args: list[str], out: Path) -> None:
    result = CliRunner().invoke(main, ["quantize", str(CLS), *args, "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.exists()


def test_ppocr_cls_quantizes_from_captured_feeds(feeds: dict) -> None:
    """The sweep's path: .npz feeds in the package's own preprocessing, qdq quantize with defaults."""
    out = feeds["root"] / "npz.int8.onnx"
    _quantize(["--data", str(feeds["calib"]), "--batch-size", "8"], out)
    _assert_close(out, feeds["eval"])


def test_ppocr_cls_quantizes_from_images_with_its_preprocessing_as_options(feeds: dict) -> None:
    """The same model from a folder of line images, rapidocr's preprocessing given as qdq options."""
    out = feeds["root"] / "images.int8.onnx"
    _quantize(["--data", str(feeds["images"]), "--image-size", "48,192", "--resize", "keep-ratio",
               "--channel-order", "bgr", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"], out)
    _assert_close(out, feeds["eval"])

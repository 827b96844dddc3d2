"""Real inputs for the third-party sweep, split into disjoint calibration and evaluation sets.

Photos come from scikit-image's bundled ``skimage.data`` (run this file with a Python that has scikit-image and
Pillow: the sweep makes ``/work/venvs/data`` for it); the split is by source photo, so no evaluation image shares
a photo with a calibration image.

    python tools/thirdparty_data.py OUT_DIR        # writes OUT_DIR/{ocr,photos}/{calib,eval}/*.png

OCR: lines of words rendered with DejaVuSans on photos (on a light box or straight on the photo) and crops of
scikit-image's scanned page (``data.page()``: top half for calibration, bottom half for evaluation).
Detector photos: each source photo and three crops of it. File-type inputs are listed by ``file_splits``:
Python standard-library files for calibration, this repository's own files for evaluation.
"""
from __future__ import annotations

import random
import subprocess
import sys
import sysconfig
from pathlib import Path

CALIB_PHOTOS = ("rocket", "coffee", "camera", "hubble_deep_field", "immunohistochemistry", "retina")
EVAL_PHOTOS = ("astronaut", "chelsea", "coins", "colorwheel", "horse", "cat")
WORDS = ("invoice total amount paid date shipping address order number quantity price customer service "
         "river mountain station north south market street bridge garden library museum coffee open close "
         "monday friday january october 2024 1987 42 365 7.50 $19.99 12:30 A4 ID-5521 Route 66 hello world "
         "quantize model export tensor scale zero point accuracy latency batch").split()


def _font(size: int):
    from PIL import ImageFont

    here = Path(__file__).resolve().parents[1] / ".venv"
    for root in (here, Path("/work/main/.venv")):
        for p in root.glob("lib/python3*/site-packages/matplotlib/mpl-data/fonts/ttf/DejaVuSans.ttf"):
            return ImageFont.truetype(str(p), size)
    return ImageFont.load_default(size)


def _rgb(arr):
    import numpy as np

    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    if arr.dtype != np.uint8:
        arr = arr.astype(np.float64)
        arr = (255 * (arr - arr.min()) / (arr.max() - arr.min() + 1e-9)).astype(np.uint8)
    return arr[..., :3]


def _photo(name: str):
    import numpy as np
    from skimage import data

    arr = _rgb(getattr(data, name)())
    return arr if max(arr.shape[:2]) <= 800 else arr[::2, ::2].copy() if arr.shape[0] < 1600 else np.ascontiguousarray(arr[::3, ::3])


def text_on_photo(name: str, variant: int):
    """A photo with 3-5 lines of words on it; variant 0: on light boxes, 1: straight on the photo."""
    from PIL import Image, ImageDraw

    rng = random.Random(f"{name}-{variant}")
    img = Image.fromarray(_photo(name)).convert("RGB")
    w, h = img.size
    draw = ImageDraw.Draw(img)
    y = 10
    for _ in range(rng.randint(3, 5)):
        font = _font(rng.randint(18, 30))
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4)))
        x = rng.randint(5, max(6, w // 5))
        box = draw.textbbox((x, y), line, font=font)
        if box[2] > w - 5:
            continue
        if variant == 0:
            draw.rectangle((box[0] - 4, box[1] - 4, box[2] + 4, box[3] + 4), fill=(245, 245, 240))
            draw.text((x, y), line, fill=(10, 10, 10), font=font)
        else:
            draw.text((x, y), line, fill=(255, 255, 255), font=font, stroke_width=2, stroke_fill=(0, 0, 0))
        y = box[3] + rng.randint(12, 30)
        if y > h - 40:
            break
    return img


def page_half(half: int):
    """Top (0) or bottom (1) half of scikit-image's scanned page, upscaled 2x."""
    from PIL import Image
    from skimage import data

    page = data.page()
    rows = page.shape[0] // 2
    part = page[:rows + 10] if half == 0 else page[rows - 10:]
    img = Image.fromarray(_rgb(part)).convert("RGB")
    return img.resize((img.width * 2, img.height * 2), Image.BICUBIC)


def crops(name: str):
    """The photo and three crops of it (centre 70 %, left 60 %, bottom-right 50 %)."""
    from PIL import Image

    img = Image.fromarray(_photo(name)).convert("RGB")
    w, h = img.size
    return [img, img.crop((int(.15 * w), int(.15 * h), int(.85 * w), int(.85 * h))),
            img.crop((0, 0, int(.6 * w), h)), img.crop((w // 2, h // 2, w, h))]


def write_images(out: Path) -> None:
    for split, names in (("calib", CALIB_PHOTOS), ("eval", EVAL_PHOTOS)):
        ocr, photos = out / "ocr" / split, out / "photos" / split
        ocr.mkdir(parents=True, exist_ok=True)
        photos.mkdir(parents=True, exist_ok=True)
        for name in names:
            for v in (0, 1):
                text_on_photo(name, v).save(ocr / f"{name}_{v}.png")
            for i, img in enumerate(crops(name)):
                img.save(photos / f"{name}_{i}.png")
        page_half(0 if split == "calib" else 1).save(ocr / "page.png")


def file_splits(repo: Path, per_split: int = 96) -> tuple[list[str], list[str]]:
    """File-type inputs: standard-library files (calibration) and this repository's tracked files (evaluation),
    a deterministic sample of at most ``per_split`` each, spread over the file kinds (suffixes)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    calib = [p for p in stdlib.rglob("*") if p.is_file() and "site-packages" not in p.parts
             and "__pycache__" not in p.parts and p.stat().st_size > 64]
    tracked = subprocess.run(["git", "ls-files"], cwd=repo, capture_output=True, text=True, check=True).stdout
    evals = [repo / f for f in tracked.split() if (repo / f).is_file() and (repo / f).stat().st_size > 64]
    return _spread(calib, per_split), _spread(evals, per_split)


def _spread(paths: list[Path], k: int) -> list[str]:
    """Round-robin over suffixes so common kinds (.py) do not crowd out the rest."""
    by_kind: dict[str, list[Path]] = {}
    for p in sorted(paths):
        by_kind.setdefault(p.suffix.lower(), []).append(p)
    rng = random.Random(0)
    for group in by_kind.values():
        rng.shuffle(group)
    picked: list[str] = []
    while len(picked) < k and any(by_kind.values()):
        for kind in sorted(by_kind):
            if by_kind[kind] and len(picked) < k:
                picked.append(str(by_kind[kind].pop()))
    return picked


if __name__ == "__main__":
    write_images(Path(sys.argv[1]))

"""Regenerate calibration_data/samples/digits/ from scikit-learn's bundled digits (deterministic).

Each PNG is 8x8 8-bit grayscale holding the digit's 0..16 values times 15 (0..240), so reading it
with ``max_value=240`` gives exactly ``load_digits().images / 16``. Run: ``python tools/make_samples.py``.
"""
from __future__ import annotations

import argparse
import csv
import logging
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

log = logging.getLogger("make_samples")

PIXEL_SCALE = 15
PER_DIGIT = 5
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "calibration_data" / "samples" / "digits"


def make_digits(out: Path, per_digit: int = PER_DIGIT) -> list[tuple[str, int, int]]:
    """Write the first ``per_digit`` images of each class as PNGs plus labels.csv; return (file, label, index) rows."""
    digits = load_digits()
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("digit_*.png"):
        old.unlink()
    rows = []
    for label in range(10):
        for index in np.flatnonzero(digits.target == label)[:per_digit]:
            values = digits.images[index]
            if not np.array_equal(values, np.round(values)) or values.max() > 16:
                raise ValueError(f"digit {index} has values outside the integers 0..16")
            name = f"digit_{label}_{index:04d}.png"
            Image.fromarray((values * PIXEL_SCALE).astype(np.uint8), mode="L").save(out / name, optimize=True)
            rows.append((name, label, int(index)))
    with (out / "labels.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["file", "label", "sklearn_index"])
        writer.writerows(sorted(rows))
    log.info("wrote %d digit images to %s", len(rows), out)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: the shipped samples)")
    parser.add_argument("--per-digit", type=int, default=PER_DIGIT, help="images per class (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    make_digits(args.out, args.per_digit)


if __name__ == "__main__":
    main()

"""The shipped sample sets: counts, no overlap, sizes, and digits regenerated deterministically."""
from __future__ import annotations

import csv
import re
from pathlib import Path

from calibration_data import builtin_path, read_texts
from calibration_data.builtin import SAMPLES_DIR

def test_sentences_and_heldout() -> None:
    train, held = list(read_texts("builtin:text")), list(read_texts("builtin:text-heldout"))
    assert len(train) >= 400 and len(held) >= 200
    assert len(set(train)) == len(train) and len(set(held)) == len(held)
    assert not set(train) & set(held), "held-out sentences must not appear in the calibration set"
    for texts in (train, held):
        words = [len(t.split()) for t in texts]
        assert min(words) >= 3 and max(words) <= 60 and max(words) >= 40
        assert sum(t.endswith("?") for t in texts) >= 20
        assert sum(bool(re.search(r"\d", t)) for t in texts) >= 20


def test_corpus_size_and_prose() -> None:
    corpus = builtin_path("corpus")
    size = corpus.stat().st_size
    assert 30_000 <= size <= 60_000
    words = corpus.read_text(encoding="utf-8").split()
    assert len(set(w.lower().strip('.,"!?;:') for w in words)) > 1500, "vocabulary should be varied"


def test_digits_folder_and_total_size(tmp_path: Path) -> None:
    folder = builtin_path("digits")
    pngs = sorted(p.name for p in folder.glob("*.png"))
    assert 40 <= len(pngs) <= 60
    with (folder / "labels.csv").open(encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(r["file"] for r in rows) == pngs
    assert all(r["file"].startswith(f"digit_{r['label']}_") for r in rows)
    assert {r["label"] for r in rows} == {str(d) for d in range(10)}
    assert sum(p.stat().st_size for p in SAMPLES_DIR.rglob("*") if p.is_file()) < 1_000_000

    from tool_modules import load_tool

    load_tool("make_samples").make_digits(tmp_path)
    for name in [*pngs, "labels.csv"]:
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), f"{name} differs when regenerated"

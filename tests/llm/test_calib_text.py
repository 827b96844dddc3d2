"""Calibration text from several sources: each an equal share of the windows; builtin:mix by default."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from converter.cli import main
from converter.llm.calib_text import MixedCalibration, shares, spread, text_calibration
from converter.llm.data import heldout_text, training_text
from converter.llm.feeds import encode_text, load_tokenizer
from converter.llm.weight_only import lm_calibration

REFERENCE_LM = Path(__file__).resolve().parents[2] / "tools" / "reference_lm"


def _windows(text: str, length: int) -> set[tuple[int, ...]]:
    stream = encode_text(load_tokenizer(str(REFERENCE_LM)), text)
    return {tuple(stream[s:s + length]) for s in range(0, len(stream) - length + 1, length)}


def test_shares_round_robin():
    assert shares([100, 100], 8) == [4, 4]
    assert shares([100, 3], 8) == [5, 3]  # the small source gives all it has, the big one the rest
    assert shares([2, 1], 8) == [2, 1]
    assert spread(10, 3) == [0, 3, 6]


def test_two_sources_each_contribute(reference_lm_onnx: Path):
    big, small = training_text(), heldout_text()[:400]  # ~150k vs ~100 tokens
    calib = MixedCalibration(reference_lm_onnx, [big, small], seq_len=16, batch=4, max_windows=12)
    rows = [tuple(r) for feeds in calib for r in feeds["input_ids"]]
    from_big, from_small = _windows(big, 16), _windows(small, 16)
    assert len(rows) == 12 and len(set(rows)) == 12
    n_small = sum(r in from_small for r in rows)
    assert n_small == min(6, len(from_small)) and n_small >= 3
    assert sum(r in from_big for r in rows) == 12 - n_small
    assert calib.counts == [12 - n_small, n_small]
    # spread over the whole big text, not its first windows only
    first = list(lm_calibration(reference_lm_onnx, big, seq_len=16, batch=1, max_windows=12))
    assert set(rows) - {tuple(f["input_ids"][0]) for f in first}
    assert [tuple(r) for feeds in calib for r in feeds["input_ids"]] == rows  # iterable again, same feeds


def test_missing_source_is_one_line_error(reference_lm_onnx: Path, tmp_path: Path):
    text = tmp_path / "a.txt"
    text.write_text("some calibration text\n", encoding="utf-8")
    out = tmp_path / "q.onnx"
    res = CliRunner().invoke(main, ["quantize-weights", str(reference_lm_onnx), "-o", str(out), "--algo", "gptq",
                                    "--data", str(text), "--data", str(tmp_path / "missing.txt")])
    assert res.exit_code == 1 and not out.exists()
    assert res.output.strip() == f"Error: text file not found: {tmp_path / 'missing.txt'}"
    res = CliRunner().invoke(main, ["quantize", str(reference_lm_onnx), "-o", str(out), "--data", "builtin:text",
                                    "--data", "builtin:corpus"])
    assert res.exit_code == 1 and not out.exists()
    assert res.output.strip() == "Error: --data takes one source without --weights (static INT8 calibration); got 2"


def _weights(path: Path) -> dict[str, np.ndarray]:
    return {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}


def test_gptq_without_data_uses_builtin_mix(reference_lm_onnx: Path, tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="converter")
    args = ["--weights", "int4", "--algo", "gptq", "--no-awq", "--no-clip", "--num-samples", "2", "--max-length", "16"]
    default, mix = tmp_path / "default.onnx", tmp_path / "mix.onnx"
    res = CliRunner().invoke(main, ["-v", "quantize", str(reference_lm_onnx), "-o", str(default), *args])
    assert res.exit_code == 0, res.output
    assert "no --data: calibrating on builtin:mix" in caplog.text
    res = CliRunner().invoke(main, ["quantize-weights", str(reference_lm_onnx), "-o", str(mix), *args,
                                    "--data", "builtin:mix"])
    assert res.exit_code == 0, res.output
    a, b = _weights(default), _weights(mix)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_text_calibration_reads_builtin(reference_lm_onnx: Path):
    calib = text_calibration(reference_lm_onnx, ["builtin:mix", "builtin:corpus"], seq_len=32, max_windows=6)
    assert sum(f["input_ids"].shape[0] for f in calib) == 6 and calib.counts == [3, 3]

"""The `qdq` CLI: commands exist, work on real models, and fail with one-line errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from click.testing import CliRunner

from converter.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def test_help_lists_commands() -> None:
    res = _run("--help")
    assert res.exit_code == 0
    for cmd in ("export", "run", "bench", "inspect"):
        assert cmd in res.output


def test_inspect(minilm_onnx: Path) -> None:
    res = _run("inspect", minilm_onnx)
    assert res.exit_code == 0, res.output
    assert "input     input_ids: int64[batch, sequence]" in res.output
    assert "MatMul" in res.output and "(0 Q/DQ)" in res.output


def test_run_with_npz_and_save(digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, image=digits_split["X_test"][:3])
    out = tmp_path / "out.npz"
    res = _run("run", digits_cnn_onnx, "--input", feeds, "-o", out)
    assert res.exit_code == 0, res.output
    assert "logits: float32[3, 10]" in res.output
    assert np.load(out)["logits"].shape == (3, 10)


def test_run_bad_feeds_one_line_error(digits_cnn_onnx: Path, tmp_path: Path) -> None:
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, image=np.zeros((2, 8, 8), np.float32))
    res = CliRunner().invoke(main, ["run", str(digits_cnn_onnx), "--input", str(feeds)])
    assert res.exit_code == 1
    assert res.output.strip().splitlines() == ["Error: input 'image' has rank 3 (shape [2, 8, 8]); expected rank 4 (image: float32[batch, 1, 8, 8])"]


def test_bench_json(minilm_onnx: Path) -> None:
    res = _run("bench", minilm_onnx, "--batch", "1", "--batch", "2", "--sequence", "16", "--runs", "3", "--warmup", "1", "--json")
    assert res.exit_code == 0, res.output
    import json

    rows = json.loads(res.output)
    assert [r["batch"] for r in rows] == [1, 2] and all(r["p50_ms"] > 0 for r in rows)


def test_errors_exit_nonzero(tmp_path: Path) -> None:
    bogus = tmp_path / "x.onnx"
    bogus.write_text("hello")
    for args in (["inspect", str(bogus)], ["inspect", str(tmp_path / "none.onnx")],
                 ["export", "--model", str(tmp_path / "nofolder"), "-o", str(tmp_path / "o.onnx")],
                 ["run", str(bogus), "--synthetic"]):
        res = CliRunner().invoke(main, args)
        assert res.exit_code == 1, args
        errors = [ln for ln in res.output.splitlines() if ln.startswith("Error: ")]
        assert len(errors) == 1 and res.output.strip().endswith(errors[0]), res.output
    assert not (tmp_path / "o.onnx").exists()


def test_bench_baseline_prints_speedup(digits_cnn_onnx: Path) -> None:
    res = _run("bench", digits_cnn_onnx, "--baseline", digits_cnn_onnx, "--batch", "4", "--runs", "3", "--warmup", "1")
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0].startswith("baseline  batch   4") and lines[1].startswith("model     batch   4")
    assert lines[2].startswith("speed-up batch 4: ") and lines[2].split(": ")[1].endswith("ms)")

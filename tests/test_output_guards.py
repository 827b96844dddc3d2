"""Outputs are checked before the work starts: writable, never an input, never a file of another kind
without --force; and every file written lands with the umask's mode (issue 17, items 1, 2 and 9)."""
from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from converter.cli import main
from runtime.errors import OutputError
from runtime.outputs import check_output, file_kind


def _run(*args: object) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return res.exit_code, res.output


def _one_error_line(output: str) -> str:
    """The whole output is one `Error: ...` line: nothing was computed or printed before the check."""
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    return lines[0]


@pytest.fixture()
def model(digits_cnn_onnx: Path, tmp_path: Path) -> Path:
    """A private copy of the FP32 digits CNN (tests here try to overwrite it)."""
    return Path(shutil.copy(digits_cnn_onnx, tmp_path / "cnn.onnx"))


def _commands(model: Path, out_dir: Path) -> dict[str, list[object]]:
    """Every command that writes a file, with its output under ``out_dir``."""
    return {
        "quantize": ["quantize", model, "--data", "builtin:digits", "-n", "16", "-o", out_dir / "q.onnx"],
        "calibrate": ["calibrate", model, "--data", "builtin:digits", "-n", "16", "--no-progress",
                      "-o", out_dir / "c.json"],
        "build": ["build", model, "--target", "ort-cpu", "-o", out_dir / "b.cpu.onnx"],
        "compare --html": ["compare", model, model, "--data", "builtin:digits", "-n", "8", "--html", out_dir / "r.html"],
        "run -o": ["run", model, "--synthetic", "-o", out_dir / "o.npz"],
    }


def _unwritable_folders(tmp_path: Path) -> list[Path]:
    """Folders no file can be created in, even by root (which ignores a folder's write bits, so a chmod
    test would pass without the check): below a regular file (mkdir fails: a file is in the way), and
    sysfs's root, which refuses new files for everyone (EACCES), as a read-only mount refuses them (EROFS).
    Without the check each command did its work, then died on the staged temp file with a traceback."""
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file")
    return [blocker / "out", Path("/sys")]


@pytest.mark.parametrize("name", ["quantize", "calibrate", "build", "compare --html", "run -o"])
def test_unwritable_output_fails_first_with_one_line(name: str, model: Path, tmp_path: Path) -> None:
    for folder in _unwritable_folders(tmp_path):
        args = _commands(model, folder)[name]
        code, output = _run(*args)
        assert code == 1, output
        line = _one_error_line(output)
        assert line.startswith(f"Error: cannot write {args[-1]}: "), line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.onnx", "not-a-folder"]  # nothing left behind


def test_output_that_is_an_input_is_refused(model: Path, tmp_path: Path) -> None:
    original = model.read_bytes()
    feeds = tmp_path / "feeds.npz"
    np.savez(feeds, image=np.zeros((2, 1, 8, 8), np.float32))
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    cases = [["quantize", model, "--data", "builtin:digits", "-n", "16", "-o", model],
             ["quantize", model, "--data", "builtin:digits", "-n", "16", "-o", link, "--force"],  # same file
             ["calibrate", model, "--data", feeds, "-o", feeds, "--force"],
             ["build", model, "--target", "ort-cpu", "-o", model],
             ["compare", model, model, "--data", "builtin:digits", "--json", model],
             ["run", model, "--input", feeds, "-o", feeds]]
    for args in cases:
        code, output = _run(*args)
        assert code == 1, (args, output)
        assert "is an input of this command" in _one_error_line(output), output
    assert model.read_bytes() == original and np.load(feeds)["image"].shape == (2, 1, 8, 8)


def test_calibration_table_is_an_input_of_quantize(model: Path, tmp_path: Path) -> None:
    table = tmp_path / "calib.json"
    assert _run("calibrate", model, "--data", "builtin:digits", "-n", "16", "--no-progress", "-o", table)[0] == 0
    before = table.read_bytes()
    code, output = _run("quantize", model, "--calib", table, "-o", table, "--force")
    assert code == 1 and "is an input of this command" in _one_error_line(output)
    assert table.read_bytes() == before


def test_file_of_another_kind_needs_force(model: Path, tmp_path: Path) -> None:
    other_table = tmp_path / "other.json"
    other_table.write_text(json.dumps({"format": "qdq.calibration/1", "tensors": {}}))
    code, output = _run("quantize", model, "--data", "builtin:digits", "-n", "16", "-o", other_table)
    assert code == 1
    assert _one_error_line(output) == (f"Error: output {other_table} exists and is a JSON file, not an ONNX model; "
                                       "choose another path, or pass --force to overwrite it")
    assert json.loads(other_table.read_text())["format"] == "qdq.calibration/1"
    code, output = _run("run", model, "--synthetic", "-o", tmp_path / "cnn.onnx.copy")  # a new file: fine
    assert code == 0, output
    shutil.copy(model, tmp_path / "fp32.npz")
    code, output = _run("run", model, "--synthetic", "-o", tmp_path / "fp32.npz")  # an ONNX model named .npz
    assert code == 1 and "exists and is an ONNX model, not a zip archive (.npz)" in _one_error_line(output)

    code, output = _run("quantize", model, "--data", "builtin:digits", "-n", "16", "-o", other_table, "--force")
    assert code == 0, output
    assert file_kind(other_table) == "onnx" and onnx.load(str(other_table), format="protobuf").graph.node
    code, output = _run("quantize", model, "--data", "builtin:digits", "-n", "16", "-o", other_table)
    assert code == 0, output  # replacing an ONNX model with an ONNX model needs no --force


def test_file_kinds(model: Path, tmp_path: Path) -> None:
    samples = {"empty": b"", "json": b' {"a": 1}', "text": b"TRT-8XXX-EntropyCalibration2\nx: 3c010a14\n",
               "html": b"<!DOCTYPE html>\n<html>", "binary": bytes(range(256))}
    for kind, data in samples.items():
        (tmp_path / kind).write_bytes(data)
        assert file_kind(tmp_path / kind) == kind
    np.savez(tmp_path / "a.npz", x=np.zeros(3))
    assert file_kind(model) == "onnx" and file_kind(tmp_path / "a.npz") == "npz"
    with pytest.raises(OutputError, match="is a folder"):
        check_output(tmp_path, kind="onnx")
    assert check_output(tmp_path / "new" / "deeper" / "x.onnx", kind="onnx") == tmp_path / "new" / "deeper" / "x.onnx"
    assert not (tmp_path / "new").exists()  # the check creates no folder


@pytest.fixture()
def umask_027():
    old = os.umask(0o027)
    try:
        yield 0o640
    finally:
        os.umask(old)


def test_written_files_follow_the_umask(model: Path, tmp_path: Path, umask_027: int) -> None:
    """Files staged with mkstemp were 0600 while export and build wrote 0644; now all are 0666 & ~umask."""
    table, q, report, html, outs = (tmp_path / n for n in ("c.json", "q.onnx", "r.json", "r.html", "o.npz"))
    cache = tmp_path / "c.cache"
    for args in (["calibrate", model, "--data", "builtin:digits", "-n", "16", "--no-progress", "-o", table,
                  "--trt-cache", cache],
                 ["quantize", model, "--calib", table, "-o", q],
                 ["compare", model, q, "--data", "builtin:digits", "-n", "8", "--json", report, "--html", html],
                 ["run", q, "--synthetic", "-o", outs],
                 ["build", q, "--target", "ort-cpu", "-o", tmp_path / "b.cpu.onnx"]):
        code, output = _run(*args)
        assert code == 0, (args, output)
    written = sorted(p for p in tmp_path.iterdir() if p.is_file() and p != model)
    assert len(written) == 8, written  # 5 above, the build's artifact and manifest, the trt cache
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: umask_027 for p in written}

"""The LLM commands through Click, with the project's error handling."""
from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from converter.cli import QdqGroup
from converter.cli.llm import commands


@pytest.fixture(scope="module")
def cli() -> click.Group:
    group = QdqGroup("qdq")
    for cmd in commands:
        group.add_command(cmd)
    return group


def test_quantize_weights_then_perplexity(cli, reference_lm_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "int4.onnx"
    res = CliRunner().invoke(cli, ["quantize-weights", str(reference_lm_onnx), "-o", str(out), "--weights", "int4",
                                   "--group-size", "64", "--algo", "gptq", "--data", "builtin:corpus",
                                   "--num-samples", "8"])
    assert res.exit_code == 0, res.output
    assert "29 MatMuls as int4 g64 gptq sym" in res.output and out.is_file()
    res = CliRunner().invoke(cli, ["perplexity", str(out), "--data", "builtin:text-heldout"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("perplexity ")


@pytest.mark.parametrize("args,message", [
    (["--group-size", "48"], "power of two"),
    (["--act-order"], "--algo gptq only"),
    (["--algo", "gptq", "--data", "missing.txt"], "text file not found"),
])
def test_quantize_weights_errors(cli, reference_lm_onnx: Path, tmp_path: Path, args, message) -> None:
    res = CliRunner().invoke(cli, ["quantize-weights", str(reference_lm_onnx), "-o", str(tmp_path / "q.onnx"), *args])
    assert res.exit_code == 1
    assert message in res.output and "Traceback" not in res.output


def test_export_lm_missing_folder(cli, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["export-lm", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "x.onnx")])
    assert res.exit_code == 1
    assert "not found" in res.output


def test_qdq_quantize_weights_option(reference_lm_onnx: Path, tmp_path: Path) -> None:
    """The issue's contract: `qdq quantize --weights int4|int8 --group-size G --algo rtn|gptq`."""
    from converter.cli import main

    out = tmp_path / "int8.onnx"
    res = CliRunner().invoke(main, ["quantize", str(reference_lm_onnx), "--weights", "int8", "--group-size", "32",
                                    "--algo", "rtn", "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "MatMuls as int8 g32 rtn sym" in res.output and out.is_file()
    bad = CliRunner().invoke(main, ["quantize", str(reference_lm_onnx), "--weights", "int4", "--smoothquant", "0.5",
                                    "-o", str(tmp_path / "x.onnx")])
    assert bad.exit_code == 2 and "does not combine" in bad.output

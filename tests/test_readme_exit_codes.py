"""The README's exit statuses are the ones the CLI returns: bad input 1, usage errors 2."""
from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from converter.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"


def _documented(kind: str) -> int:
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(rf"{kind}[^.;]*? exits with status (\d)", text, re.IGNORECASE)
    assert found, f"the README does not say which status {kind} exits with"
    return int(found.group(1))


def test_exit_statuses_match_the_readme(tmp_path: Path) -> None:
    runner = CliRunner()
    bad_input = runner.invoke(main, ["inspect", str(tmp_path / "missing.onnx")])
    usage = runner.invoke(main, ["bench", str(tmp_path / "missing.onnx"), "--batch", "0"])
    assert bad_input.output.startswith("Error: ") and usage.output.startswith("Usage: ")
    assert bad_input.exit_code == _documented("bad input") == 1
    assert usage.exit_code == _documented("a usage error") == 2

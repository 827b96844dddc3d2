"""The HTML compare report, opened in a real headless Chromium: it loads and shows its plots."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from converter.cli import main

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_html_report_renders_plots_in_chromium(digits_cnn_onnx: Path, tmp_path: Path, request) -> None:
    qdq_model = request.getfixturevalue("ort_qdq_cnn")
    page = tmp_path / "report.html"
    res = CliRunner().invoke(main, ["compare", str(digits_cnn_onnx), str(qdq_model), "--data", "builtin:digits",
                                    "--html", str(page)])
    assert res.exit_code == 0, res.output

    dom = _chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-500:]
    assert "Quantized vs FP32" in dom.stdout
    assert dom.stdout.count("<svg") >= 2 and 'id="snr-plot"' in dom.stdout and 'id="hist-plot"' in dom.stdout

    shot = tmp_path / "page.png"
    run = _chromium(tmp_path, "--window-size=1200,1600", f"--screenshot={shot}", page.as_uri())
    assert run.returncode == 0 and shot.is_file(), run.stderr[-500:]
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    # the bar chart and histograms paint large coloured areas: count clearly non-grey pixels
    saturation = pixels.max(axis=2) - pixels.min(axis=2)
    assert (saturation > 60).mean() > 0.02

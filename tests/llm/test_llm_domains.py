"""tools/llm_domains.py: held-out domain texts from installed packages, tune and report splits disjoint."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

from calibration_data.builtin import builtin_path

TOOLS = Path(__file__).resolve().parents[2] / "tools"


def _tool(name: str):
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, TOOLS / f"{name}.py")
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


def test_domains_disjoint_deterministic_and_unseen(tmp_path: Path):
    domains = _tool("llm_domains")
    files = domains.domain_files("report", tmp_path / "a")  # built on the fly
    assert set(files) == {"legal", "docs", "code", "structured"}
    domains.build(tmp_path / "b")
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    mix = builtin_path("builtin:mix").read_text(encoding="utf-8")
    for name, parts in manifest["domains"].items():
        tune, report = (tmp_path / "a" / parts[s]["file"] for s in ("tune", "report"))
        assert tune.read_text() == (tmp_path / "b" / tune.name).read_text()  # deterministic
        assert not set(parts["tune"]["sources"]) & set(parts["report"]["sources"])  # split by source file
        for path in (tune, report):
            text = path.read_text(encoding="utf-8")
            assert 60_000 <= len(text) <= 100_100, (path, len(text))
            lines = {line for line in text.splitlines() if len(line) > 80}
            assert not any(line in mix for line in lines), f"{path.name} shares a line with builtin:mix"
        if name == "legal":  # each licence paragraph once: shared boilerplate is not in both halves
            paras = lambda p: {" ".join(x.split()) for x in p.read_text().split("\n\n") if len(x) > 200}  # noqa: E731
            assert not paras(tune) & paras(report)

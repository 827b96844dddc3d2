"""tools/llm_domains.py: held-out domain texts from installed packages, tune and report splits disjoint."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tool_modules import TOOLS
from tool_modules import load_tool as _tool

from calibration_data.builtin import builtin_path


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


def test_bench_extra_recipes_and_target_lines():
    sys.path.insert(0, str(TOOLS))
    bd = _tool("bench_llm_domains")
    name, cfg = bd.parse_extra("awq only=algo=gptq,awq=true,group-size=64")
    assert name == "awq only" and (cfg.algo, cfg.awq, cfg.clip, cfg.group_size) == ("gptq", True, False, 64)
    for bad in ("x", "x=bits", "x=foo=1", "x=awq=maybe"):
        try:
            bd.parse_extra(bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad!r} was accepted")
    vs = {v.name: v for v in bd.variants([])}
    ppl = {"FP32": (10.0, 20.0), bd.RTN: (11.0, 22.0), bd.GPTQ: (10.6, 21.2), bd.DEFAULT: (10.5, 20.9),
           "ORT MatMulNBits default g128": (10.9, 21.5), "ORT MatMulNBits HQQ g128": (10.8, 20.85)}
    for n, (a, b) in ppl.items():
        vs[n].scores = {"a": {"ppl": a, "kl": 0.0, "tokens": 9}, "b": {"ppl": b, "kl": 0.0, "tokens": 9}}
    vs["ORT MatMulNBits k-quant g128"].error = "RuntimeError: no"
    (ratio, ratio_ok), (peers, peers_ok) = bd.checks(list(vs.values()), ["a", "b"])
    assert ratio_ok and ratio.endswith("PASS")  # 0.5/1.0 and 0.9/2.0
    assert not peers_ok and "b 20.900 vs HQQ g128 20.850" in peers and "failed: ORT MatMulNBits k-quant" in peers
    vs[bd.DEFAULT].scores["b"]["ppl"] = 20.8
    vs["ORT MatMulNBits k-quant g128"].error = ""
    vs["ORT MatMulNBits k-quant g128"].scores = vs["ORT MatMulNBits default g128"].scores
    assert all(ok for _, ok in bd.checks(list(vs.values()), ["a", "b"]))
    vs[bd.DEFAULT].scores["a"]["ppl"] = 10.6  # 0.6 of RTN's increase
    assert not bd.checks(list(vs.values()), ["a", "b"])[0][1]

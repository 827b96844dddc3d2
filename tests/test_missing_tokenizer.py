"""A Hugging Face folder without tokenizer files: export says so, text data refuses the stand-in
tokenizer transformers builds from the config (a vocabulary of 5 special tokens, every word [UNK])."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from calibration_data import DataError, open_data
from runtime.specs import TensorSpec


@pytest.fixture(scope="module")
def bert_without_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT saved with save_pretrained: config.json and weights, no tokenizer files."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    folder = tmp_path_factory.mktemp("hf") / "tiny-bert"
    transformers.BertModel(config).save_pretrained(folder)
    assert not list(folder.glob("*token*")) and not (folder / "vocab.txt").exists()
    return folder


def test_text_data_refuses_a_folder_without_tokenizer(bert_without_tokenizer: Path) -> None:
    specs = [TensorSpec(n, np.dtype(np.int64), ("batch", "sequence")) for n in ("input_ids", "attention_mask")]
    with pytest.raises(DataError, match="has no tokenizer files.*--tokenizer"):
        open_data("builtin:text", specs, model_dir=bert_without_tokenizer)


def test_export_warns_and_calibrate_names_the_fix(bert_without_tokenizer: Path, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    from converter.cli import main
    from converter.export import export_hf

    out = tmp_path / "tiny.onnx"
    with caplog.at_level(logging.WARNING, logger="converter"):
        export_hf(bert_without_tokenizer, out)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(bert_without_tokenizer) in warnings[0], warnings
    assert "no tokenizer files" in warnings[0] and "--tokenizer" in warnings[0]

    res = CliRunner().invoke(main, ["calibrate", str(out), "--data", "builtin:text", "-n", "8",
                                    "-o", str(tmp_path / "c.json")], catch_exceptions=False)
    assert res.exit_code == 1, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "no tokenizer files" in lines[0], res.output
    assert "--tokenizer" in lines[0] and not (tmp_path / "c.json").exists()

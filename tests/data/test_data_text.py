"""Text reader: real MiniLM tokenizer, ragged per-batch padding, truncation, mapping and errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calibration_data import DataError, TextReader, load_tokenizer, open_data, read_texts, tokenize_batch
from runtime.specs import TensorSpec


def _check_batch(batch: dict[str, np.ndarray], pad_id: int, max_length: int) -> None:
    ids, mask, types = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    assert ids.dtype == mask.dtype == types.dtype == np.int64
    assert ids.shape == mask.shape == types.shape and ids.shape[1] <= max_length
    lengths = mask.sum(axis=1)
    assert lengths.max() == ids.shape[1], "batch is padded only to its longest sample"
    for row, n in enumerate(lengths):
        assert mask[row, :n].all() and not mask[row, n:].any(), "mask is a prefix of ones"
        assert (ids[row, n:] == pad_id).all() and (ids[row, :n] != pad_id).all()
    assert not types.any()


def test_builtin_text_batches_are_ragged(minilm_dir: Path, bert_specs: list[TensorSpec]) -> None:
    tok = load_tokenizer(minilm_dir)
    batches = list(open_data("builtin:text", bert_specs, batch_size=8, num_samples=64, model_dir=minilm_dir))
    assert [len(b["input_ids"]) for b in batches] == [8] * 8
    for b in batches:
        _check_batch(b, tok.pad_token_id, 128)
        assert (b["input_ids"][:, 0] == tok.cls_token_id).all()
    assert len({b["input_ids"].shape[1] for b in batches}) > 1, "lengths should differ between batches"
    first = next(read_texts("builtin:text"))
    decoded = tok.decode(batches[0]["input_ids"][0], skip_special_tokens=True)
    assert decoded.replace(" ", "") == first.lower().replace(" ", "")


def test_truncation_and_num_samples(minilm_dir: Path, bert_specs: list[TensorSpec]) -> None:
    batches = list(open_data("builtin:text", bert_specs, batch_size=4, num_samples=10, model_dir=minilm_dir,
                             max_length=12))
    assert [len(b["input_ids"]) for b in batches] == [4, 4, 2]
    assert max(b["input_ids"].shape[1] for b in batches) == 12
    tok = load_tokenizer(minilm_dir)
    for b in batches:
        _check_batch(b, tok.pad_token_id, 12)
        full = b["attention_mask"].sum(axis=1) == 12
        assert (b["input_ids"][full, -1] == tok.sep_token_id).all(), "truncated rows still end with [SEP]"


def test_fixed_length_int32_and_position_ids(minilm_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "few.txt"
    src.write_text("one short line\n\n   \nanother line that is a bit longer than the first\n", encoding="utf-8")
    specs = [TensorSpec("input_ids", np.dtype(np.int32), ("batch", 24)),
             TensorSpec("attention_mask", np.dtype(np.int32), ("batch", 24)),
             TensorSpec("position_ids", np.dtype(np.int64), ("batch", 24))]
    (batch,) = open_data(src, specs, model_dir=minilm_dir, max_length=24)
    assert set(batch) == {"input_ids", "attention_mask", "position_ids"}
    assert batch["input_ids"].shape == (2, 24) and batch["input_ids"].dtype == np.int32
    n = int(batch["attention_mask"][0].sum())
    assert batch["position_ids"][0, :n].tolist() == list(range(n))

    padded = list(open_data(src, specs[:2], model_dir=minilm_dir, pad_to_max_length=True))
    assert padded[0]["input_ids"].shape == (2, 24)
    dyn = [TensorSpec("input_ids", np.dtype(np.int64), ("b", "s"))]
    (fixed,) = open_data(src, dyn, model_dir=minilm_dir, max_length=20, pad_to_max_length=True)
    assert fixed["input_ids"].shape == (2, 20)


def test_jsonl_with_custom_field(minilm_dir: Path, bert_specs: list[TensorSpec], tmp_path: Path) -> None:
    src = tmp_path / "d.jsonl"
    src.write_text("\n".join(json.dumps({"body": f"sample number {i}", "id": i}) for i in range(5)) + "\n")
    assert list(read_texts(src, text_field="body"))[2] == "sample number 2"
    batches = list(open_data(src, bert_specs, batch_size=2, model_dir=minilm_dir, text_field="body"))
    assert [len(b["input_ids"]) for b in batches] == [2, 2, 1]
    with pytest.raises(DataError, match=r"d\.jsonl:1: no string field 'text'"):
        list(read_texts(src))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        list(read_texts(bad))


def test_tokenize_batch_without_specs(minilm_dir: Path) -> None:
    out = tokenize_batch(load_tokenizer(minilm_dir), ["a cat", "a much longer sentence about dogs"])
    assert set(out) == {"input_ids", "attention_mask", "token_type_ids"}
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"][0].sum() < out["input_ids"].shape[1]


def test_text_errors(minilm_dir: Path, bert_specs: list[TensorSpec], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a tokenizer.*model_dir"):
        open_data("builtin:text", bert_specs)
    with pytest.raises(DataError, match="tokenizer folder not found"):
        open_data("builtin:text", bert_specs, model_dir=tmp_path / "nope")
    with pytest.raises(DataError, match="could not load a tokenizer from"):
        open_data("builtin:text", bert_specs, model_dir=tmp_path)
    extra = [*bert_specs, TensorSpec("pixel_values", np.dtype(np.float32), ("b", 3, 8, 8))]
    with pytest.raises(DataError, match="input 'pixel_values' cannot come from a tokenizer"):
        open_data("builtin:text", extra, model_dir=minilm_dir)
    rank3 = [TensorSpec("input_ids", np.dtype(np.int64), ("b", "s", 1))]
    with pytest.raises(DataError, match="input 'input_ids'.*rank 3"):
        open_data("builtin:text", rank3, model_dir=minilm_dir)
    as_bool = [TensorSpec("attention_mask", np.dtype(np.bool_), ("b", "s"))]
    with pytest.raises(DataError, match="input 'attention_mask'.*cannot be cast to bool"):
        open_data("builtin:text", as_bool, model_dir=minilm_dir)
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    with pytest.raises(DataError, match=r"no samples in .*empty\.txt"):
        TextReader(empty, bert_specs, model_dir=minilm_dir)
    with pytest.raises(DataError, match="max_length"):
        open_data("builtin:text", bert_specs, model_dir=minilm_dir, max_length=0)


def test_tokenizer_without_pad_token(tmp_path: Path) -> None:
    """A bare tokenizers file (as a small causal LM would ship) pads with its eos token."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, "the": 2, "cat": 3, "sat": 4}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    config = {"eos_token": "</s>", "tokenizer_class": "PreTrainedTokenizerFast"}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "texts.txt").write_text("the cat sat\nthe dog\n")
    specs = [TensorSpec(n, np.dtype(np.int64), ("b", "s")) for n in ("input_ids", "attention_mask", "position_ids")]
    (batch,) = open_data(tmp_path / "texts.txt", specs, model_dir=tmp_path)
    assert batch["input_ids"].tolist() == [[2, 3, 4], [2, 0, 1]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["position_ids"][:, :2].tolist() == [[0, 1], [0, 1]]
    with pytest.raises(DataError, match="input 'token_ids' cannot come from a tokenizer"):
        open_data(tmp_path / "texts.txt", [TensorSpec("token_ids", np.dtype(np.int64), ("b", "s"))],
                  model_dir=tmp_path)

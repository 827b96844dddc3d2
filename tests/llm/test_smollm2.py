"""A real trained LLM end to end: SmolLM2-135M-Instruct exported, generating and scored like torch."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import torch
from click.testing import CliRunner

from calibration_data.builtin import builtin_path
from converter.llm.feeds import encode_text
from converter.llm.perplexity import _nll, stream_perplexity
from converter.models import SOURCE_KEY
from runtime import Engine
from runtime.generate import generate

HELDOUT_TOKENS = 400  # a short held-out English text (never calibration text)


def _heldout_stream(tok) -> np.ndarray:
    return encode_text(tok, builtin_path("builtin:text-heldout").read_text(encoding="utf-8"))[:HELDOUT_TOKENS]


def test_default_export_check_passes_and_records_the_builtin_name(smollm2_export) -> None:
    """30 layers, logits in the tens: the check's tolerance is relative to that scale."""
    assert smollm2_export.output_scale["logits"] > 1
    assert smollm2_export.worst_relative_diff < 1e-4, smollm2_export.max_abs_diff
    meta = {p.key: p.value for p in onnx.load(smollm2_export.path, load_external_data=False).metadata_props}
    assert meta[SOURCE_KEY] == "smollm2" and meta["qdq.llm.num_layers"] == "30"


def test_greedy_tokens_match_torch(smollm2, smollm2_export) -> None:
    model, tok = smollm2
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = tok(text, return_tensors="np")["input_ids"]
    ref = model.generate(torch.as_tensor(ids), max_new_tokens=10, do_sample=False,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id).numpy()
    with Engine.load(smollm2_export.path) as eng:
        got = generate(eng, ids, 10, eos_token_id=tok.eos_token_id)
    np.testing.assert_array_equal(got, ref)
    assert "Paris" in tok.decode(got[0, ids.shape[1]:])


def test_perplexity_matches_torch(smollm2, smollm2_export) -> None:
    model, tok = smollm2
    stream, context = _heldout_stream(tok), 128
    with Engine.load(smollm2_export.path) as eng:
        onnx_ppl = stream_perplexity(eng, stream, context).perplexity
    total, count = 0.0, 0
    for s in range(0, len(stream) - 1, context):  # the same windows as stream_perplexity
        rows = torch.as_tensor(stream[s:s + context + 1])[None]
        with torch.no_grad():
            logits = model(input_ids=rows[:, :-1]).logits.numpy()
        total += _nll(logits, rows[:, 1:].numpy())
        count += rows.shape[1] - 1
    torch_ppl = math.exp(total / count)
    assert 5 < torch_ppl < 200  # a trained model on English prose
    assert abs(onnx_ppl / torch_ppl - 1) < 0.005, (onnx_ppl, torch_ppl)


def test_int4_group128_pads_k576_and_perplexity_finds_the_tokenizer(smollm2_export, tmp_path: Path) -> None:
    """K = 576 is not a multiple of 128 (refused before); the quantized model still names its source."""
    from converter.cli import main

    out = tmp_path / "int4.onnx"
    res = CliRunner().invoke(main, ["quantize", str(smollm2_export.path), "--weights", "int4", "--group-size", "128",
                                    "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert "210 MatMuls as int4 g128 rtn sym" in res.output
    meta = {p.key: p.value for p in onnx.load(out, load_external_data=False).metadata_props}
    assert meta[SOURCE_KEY] == "smollm2"
    text = tmp_path / "heldout.txt"
    text.write_text("\n".join(builtin_path("builtin:text-heldout").read_text(encoding="utf-8").splitlines()[:20]))
    scores = []
    for model in (smollm2_export.path, out):  # no --tokenizer: read from the recorded source
        res = CliRunner().invoke(main, ["perplexity", str(model), "--data", str(text)])
        assert res.exit_code == 0, res.output
        scores.append(float(res.output.split()[1]))
    assert scores[0] < scores[1] < 1.5 * scores[0], scores  # INT4 costs a little, not everything

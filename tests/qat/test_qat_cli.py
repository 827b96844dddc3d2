"""`qdq qat`: trains, exports, resumes, and fails on bad input with a one-line error."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from converter.cli.qat import command
from runtime import Engine


def _run(*args) -> object:
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def cnn_pt(digits_cnn, tmp_path: Path) -> Path:
    path = tmp_path / "digits.pt"
    torch.save(digits_cnn, path)
    return path


def test_qat_trains_exports_and_resumes(cnn_pt: Path, digits_cnn_onnx: Path, digits_split: dict, tmp_path: Path) -> None:
    from converter.calibrate import calibrate

    out, ckpt, calib = tmp_path / "q.onnx", tmp_path / "q.ckpt", tmp_path / "calib.json"
    calibrate(digits_cnn_onnx, [{"image": digits_split["X_train"][:64]}], progress=False).save(calib)
    common = ["--model", cnn_pt, "--onnx", digits_cnn_onnx, "--calib", calib, "--data", "builtin:digits",
              "--distill", "--checkpoint", ckpt, "--checkpoint-every", "2", "-o", out]
    res = _run(*common, "--steps", "3")
    assert res.exit_code == 0, res.output
    assert "trained steps 0..3" in res.output and "4 QuantizeLinear" in res.output
    assert ckpt.is_file()
    with Engine.load(out) as eng:
        logits = eng.run({"image": digits_split["X_test"][:5]})["logits"]
    assert logits.shape == (5, 10) and np.isfinite(logits).all()

    res = _run(*common, "--steps", "5", "--resume")
    assert res.exit_code == 0, res.output
    assert "trained steps 3..5" in res.output


def test_data_without_labels_distils_from_the_fp32_model(cnn_pt: Path, digits_cnn_onnx: Path, tmp_path: Path) -> None:
    """The README's `qdq qat ... --data builtin:digits` (no --distill): images have no labels, so it distils."""
    out = tmp_path / "q.onnx"
    res = _run("--model", cnn_pt, "--onnx", digits_cnn_onnx, "--data", "builtin:digits", "--steps", "2", "-o", out)
    assert res.exit_code == 0, res.output
    notes = [line for line in res.output.splitlines() if "distillation" in line]
    assert len(notes) == 1 and "no labels" in notes[0], res.output
    assert "trained steps 0..2" in res.output and "%|" not in res.stderr  # not a terminal: no bars
    with Engine.load(out) as eng:
        assert eng.run({"image": np.zeros((2, 1, 8, 8), np.float32)})["logits"].shape == (2, 10)


@pytest.mark.parametrize("args, message", [
    (["--model", "no/such/model", "--data", "builtin:digits"], "model not found"),
    (["--model", "{pt}", "--data", "builtin:digits", "--distill"], "needs --onnx"),
    (["--model", "{pt}", "--onnx", "{onnx}", "--data", "builtin:digits", "--resume"], "--resume needs --checkpoint"),
    (["--model", "{pt}", "--data", "builtin:digits", "--calib", "{bad}"], "--calib needs --onnx"),
    (["--model", "{pt}", "--onnx", "{onnx}", "--data", "builtin:digits", "--distill", "--calib", "{bad}"],
     "not a JSON calibration table"),
    (["--model", "{pt}", "--onnx", "{onnx}", "--data", "builtin:nothing", "--distill"], "unknown built-in data"),
    (["--model", "{bad}", "--onnx", "{onnx}", "--data", "builtin:digits", "--distill"], "not a torch model file"),
    (["--model", "{pt}", "--onnx", "{onnx}", "--data", "builtin:digits", "--distill", "--checkpoint", "{bad}",
      "--resume"], "not a readable QAT checkpoint"),
])
def test_bad_input_gives_one_line_error(args: list[str], message: str, cnn_pt: Path, digits_cnn_onnx: Path,
                                        tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("not json")
    subst = {"{pt}": cnn_pt, "{onnx}": digits_cnn_onnx, "{bad}": bad}
    res = _run(*[subst.get(a, a) for a in args], "--steps", "2", "-o", tmp_path / "o.onnx")
    assert res.exit_code == 1, res.output
    last = res.output.strip().splitlines()[-1]  # progress lines ("loading ...") may precede it on stderr
    assert last.startswith("Error: ") and message in last, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.onnx").exists()


def test_data_free_peqa_on_a_causal_lm_folder(tmp_path: Path) -> None:
    """A Hugging Face Llama folder, data-free (sequences sampled from the FP32 model), PEQA INT4 weight-only."""
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=48, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    folder = tmp_path / "tiny-llama"
    transformers.LlamaForCausalLM(config).save_pretrained(folder)
    out = tmp_path / "lm.onnx"
    res = _run("--model", folder, "--generate", "4", "--max-length", "8", "--batch-size", "2", "--steps", "2",
               "--peqa", "--distill", "--act-bits", "0", "-o", out)
    assert res.exit_code == 0, res.output
    assert "0 QuantizeLinear" in res.output and "trained steps 0..2" in res.output
    ids = np.random.default_rng(0).integers(0, 48, (1, 6)).astype(np.int64)
    with Engine.load(out) as eng:
        assert [s.name for s in eng.input_specs] == ["input_ids", "attention_mask"]
        assert eng.run({"input_ids": ids, "attention_mask": np.ones_like(ids)})["logits"].shape == (1, 6, 48)
    res = _run("--model", folder, "--data", "builtin:text", "--generate", "2", "--steps", "1", "-o", out)
    assert res.exit_code == 1 and "not both" in res.output

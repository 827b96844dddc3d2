"""The shipped English text, split into training and held-out parts for the reference LM.

Training (and GPTQ calibration) text: the first 90% of ``corpus.txt`` plus ``sentences.txt``.
Held-out text for perplexity: the last 10% of ``corpus.txt`` plus ``sentences_heldout.txt``.
"""
from __future__ import annotations

from calibration_data.builtin import SAMPLES_DIR as SAMPLES

HELDOUT_FRACTION = 0.1


def _corpus_split() -> tuple[str, str]:
    """Split corpus.txt at the paragraph break nearest to 90% of its length."""
    text = (SAMPLES / "corpus.txt").read_text(encoding="utf-8")
    target = int(len(text) * (1 - HELDOUT_FRACTION))
    cut = text.rfind("\n\n", 0, target)
    cut = cut if cut > 0 else target
    return text[:cut].strip(), text[cut:].strip()


def training_text() -> str:
    """Text the reference LM is trained on; also the calibration text for second-order quantization."""
    head, _ = _corpus_split()
    return head + "\n\n" + (SAMPLES / "sentences.txt").read_text(encoding="utf-8").strip()


def heldout_text() -> str:
    """Text never seen in training or calibration, for perplexity."""
    _, tail = _corpus_split()
    return tail + "\n\n" + (SAMPLES / "sentences_heldout.txt").read_text(encoding="utf-8").strip()

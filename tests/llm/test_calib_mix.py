"""builtin:mix ships all four kinds of text and none of the held-out tail of corpus.txt."""
from calibration_data.builtin import builtin_path
from converter.llm.data import heldout_text


def test_mix_has_every_kind_and_no_heldout_text():
    text = builtin_path("builtin:mix").read_text(encoding="utf-8")
    assert "User:" in text and "Assistant:" in text  # dialogue
    assert "def " in text and "import " in text  # code
    assert '"score":' in text and "id,name,score,active" in text and "- id:" in text  # JSON, CSV, YAML
    assert len(text) < 300_000
    tail = heldout_text()[:200]
    assert tail not in text


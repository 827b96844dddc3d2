"""Build calibration_data/samples/mix.txt, the shipped ``builtin:mix`` calibration text (reproducible, seed 0).

Four kinds in equal shares, separated by blank lines, all licence-clean:
prose (the training part of corpus.txt, never its held-out tail), dialogue (chat turns generated here from
templates), code (this repository's own converter/ sources) and structured text (JSON/CSV/YAML generated here).
"""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "calibration_data" / "samples" / "mix.txt"
SHARE = 60_000  # characters per kind

_TOPICS = ["the weather", "a train timetable", "a recipe for soup", "a bug in a script", "planting tomatoes",
           "a library book", "a bicycle repair", "a job interview", "learning French", "a broken laptop",
           "a birthday party", "saving money", "a chess opening", "a museum visit", "a power cut"]
_ASKS = ["Can you help me with {t}?", "I have a question about {t}.", "What should I know about {t}?",
         "Could you explain {t} in simple terms?", "My friend asked me about {t}. Any advice?"]
_ANSWERS = ["Of course. The first thing to check is what you already know about {t}, then go step by step.",
            "Sure. Most people find {t} easier once they write down the main points and keep it short.",
            "Happy to help. With {t}, start small, test one change at a time, and note what happened.",
            "Good question. {T} depends on a few details; tell me more and I will suggest something concrete."]
_FOLLOW = ["Thanks, that makes sense.", "What if that does not work?", "How long does it usually take?",
           "Is there anything I should avoid?", "Great, I will try that tonight."]
_REPLY = ["Then try the second option and compare the results.", "Usually a few minutes, sometimes an hour.",
          "Avoid rushing; most mistakes come from skipping the checks.", "You're welcome. Let me know how it goes."]


def _prose(rng: random.Random) -> str:
    import sys
    sys.path.insert(0, str(ROOT))
    from converter.llm.data import training_text
    text = training_text()
    start = rng.randrange(0, max(1, len(text) - SHARE))
    return text[start:start + SHARE]


def _dialogue(rng: random.Random) -> str:
    out: list[str] = []
    while sum(map(len, out)) < SHARE:
        t = rng.choice(_TOPICS)
        turns = [f"User: {rng.choice(_ASKS).format(t=t)}",
                 f"Assistant: {rng.choice(_ANSWERS).format(t=t, T=t[0].upper() + t[1:])}",
                 f"User: {rng.choice(_FOLLOW)}", f"Assistant: {rng.choice(_REPLY)}"]
        out.append("\n".join(turns))
    return "\n\n".join(out)


def _code(rng: random.Random) -> str:
    files = sorted((ROOT / "converter").rglob("*.py"))
    rng.shuffle(files)
    out: list[str] = []
    for f in files:
        if sum(map(len, out)) >= SHARE:
            break
        out.append(f.read_text(encoding="utf-8"))
    return "\n\n".join(out)[:SHARE]


def _structured(rng: random.Random) -> str:
    out: list[str] = []
    names = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
    while sum(map(len, out)) < SHARE:
        kind = rng.randrange(3)
        rows = [{"id": rng.randrange(10_000), "name": rng.choice(names), "score": round(rng.random() * 100, 2),
                 "active": rng.random() < 0.5, "tags": rng.sample(_TOPICS, 2)} for _ in range(rng.randint(3, 8))]
        if kind == 0:
            out.append(json.dumps(rows, indent=2))
        elif kind == 1:
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            w.writerow(["id", "name", "score", "active"])
            w.writerows([[r["id"], r["name"], r["score"], r["active"]] for r in rows])
            out.append(buf.getvalue().strip())
        else:
            out.append("\n".join(f"- id: {r['id']}\n  name: {r['name']}\n  score: {r['score']}\n"
                                 f"  active: {str(r['active']).lower()}" for r in rows))
    return "\n\n".join(out)[:SHARE]


def build() -> str:
    rng = random.Random(0)
    parts = [_prose(rng), _dialogue(rng), _code(rng), _structured(rng)]
    return "\n\n".join(p.strip() for p in parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(build(), encoding="utf-8")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")

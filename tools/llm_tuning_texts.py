"""The four texts the default INT4 recipe was chosen on: system files, disjoint from tools/llm_domains.py's splits.

    python tools/llm_tuning_texts.py --out build/llm_tuning      # legal.txt code.txt docs.txt structured.txt
    python tools/bench_llm.py --model smollm2 --domain legal=build/llm_tuning/legal.txt ...

Debian's licence texts, Python's own json/ and http/ sources, CMake's manuals and CMake's JSON flag tables
+ iso-codes XML: 60k characters each (the first 40k were evaluated at context 256 when choosing). None of it
is in site-packages (where the benchmark's held-out domains come from) nor in builtin:mix.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

CHARS = 60_000


def _take(files: Iterable[Path]) -> str:
    out, total = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        out.append(text.strip())
        total += len(text)
        if total > CHARS:
            break
    return "\n\n".join(out)[:CHARS]


def texts() -> dict[str, str]:
    lic, py, cmake = Path("/usr/share/common-licenses"), Path("/usr/lib/python3.11"), Path("/usr/share/cmake-3.25")
    return {
        "legal": _take(lic / x for x in ["GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-3", "Artistic", "BSD"]),
        "code": _take(sorted(py.glob("json/*.py")) + sorted(py.glob("http/*.py"))),
        "docs": _take(sorted((cmake / "Help/manual").glob("*.rst"))),
        "structured": _take(sorted((cmake / "Templates/MSBuild/FlagTables").glob("*.json"))[:3]
                            + [Path("/usr/share/xml/iso-codes/iso_639-2.xml")]),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path("build/llm_tuning"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, text in texts().items():
        if not text:
            raise SystemExit(f"{name}: none of its system files exist on this machine")
        (args.out / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"{args.out / name}.txt: {len(text)} characters")


if __name__ == "__main__":
    main()

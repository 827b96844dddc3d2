"""Check an output path before the work starts: writable, not an input, not a file of another kind.

    check_output("model.int8.onnx", kind="onnx", inputs=["model.onnx", "calib.json"])

"Kind" is read from the existing file's first bytes, not its name: an ONNX model (protobuf starting with
``ir_version``), JSON, a zip archive (.npz), an HTML page, an ORT-format model, other text, other binary.
An empty file may be replaced by anything.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError

KINDS: dict[str, str] = {
    "onnx": "an ONNX model", "json": "a JSON file", "npz": "a zip archive (.npz)", "html": "an HTML page",
    "ort": "an ORT-format model", "text": "a text file", "binary": "a binary file", "empty": "an empty file",
}
_ONNX_FIELDS = {2, 3, 4, 5, 6, 7, 8, 14, 20, 25}  # ModelProto fields that may follow ir_version (field 1)


def file_kind(path: str | os.PathLike[str]) -> str:
    """The kind of an existing file, sniffed from its first bytes (a key of ``KINDS``)."""
    with open(path, "rb") as fh:
        head = fh.read(512)
    if not head:
        return "empty"
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return "npz"
    # protobuf: tag of field 1 (varint), a small ir_version, then the tag of another ModelProto field
    if len(head) > 2 and head[0] == 0x08 and 0 < head[1] < 0x80 and head[2] >> 3 in _ONNX_FIELDS:
        return "onnx"
    if head[4:8] == b"ORTM":
        return "ort"
    text = head.lstrip()
    if text[:14].lower() == b"<!doctype html" or text[:5].lower() == b"<html":
        return "html"
    if text[:1] in (b"{", b"["):
        return "json"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3:  # not just a multi-byte character cut at the end of the sample
            return "binary"
    return "binary" if b"\0" in head else "text"


def check_output(path: str | os.PathLike[str], *, kind: str | None = None,
                 inputs: Iterable[str | os.PathLike[str] | None] = (), force: bool = False) -> Path:
    """Raise ``OutputError`` unless ``path`` can be written now and replacing it loses nothing.

    Refused: a folder; any of ``inputs`` (same file after resolving links); an existing file whose kind is
    not ``kind`` unless ``force``; a path whose folder cannot be created or written (probed with a
    temporary file, which is removed). ``kind`` None skips the kind check.
    """
    out = Path(path)
    if out.is_dir():
        raise OutputError(f"output {out} is a folder; give a file path")
    for source in inputs:
        if source is not None and _same_file(out, Path(source)):
            raise OutputError(f"output {out} is an input of this command ({source}); choose another output path")
    if kind is not None and out.is_file() and not force:
        found = file_kind(out)
        if found not in (kind, "empty"):
            raise OutputError(f"output {out} exists and is {KINDS.get(found, found)}, not {KINDS.get(kind, kind)}; "
                              "choose another path, or pass --force to overwrite it")
    _probe_folder(out)
    return out


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet)
        return a.resolve() == b.resolve()


def _probe_folder(out: Path) -> None:
    """The nearest existing folder of ``out`` must take a new file (the staged temp file lands there)."""
    folder = next(p for p in (out.parent, *out.parent.parents) if os.path.lexists(p) or p == Path(p.anchor or "."))
    if not folder.is_dir():
        raise OutputError(f"cannot write {out}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=f".{out.name}.", suffix=".probe")
    except OSError as exc:
        raise OutputError(f"cannot write {out}: {exc.strerror or exc} ({folder})") from None
    os.close(fd)
    os.unlink(probe)

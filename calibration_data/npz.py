"""Reading ``.npz`` archives without loading them: array headers, and memory maps of uncompressed members."""
from __future__ import annotations

import logging
import struct
import zipfile
from pathlib import Path
from typing import BinaryIO

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)

_LOCAL_HEADER = struct.Struct("<4s5H3L2H")  # zip local file header, 30 bytes


def _read_header(fp: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype] | None:
    """Shape, Fortran order and dtype of an .npy stream positioned at its start; None for format 3.0."""
    version = np.lib.format.read_magic(fp)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(fp)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(fp)
    return None


def npz_headers(path: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of each array in an .npz file, reading only the headers."""
    headers: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as fp:
                    header = _read_header(fp)
                if header is None:
                    with np.load(path, allow_pickle=False) as data:
                        arr = data[info.filename[:-4]]
                        header = (arr.shape, False, arr.dtype)
                headers[info.filename[:-4]] = (header[0], header[2])
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive: {exc}") from exc
    return headers


def _memmap_member(path: Path, info: zipfile.ZipInfo) -> np.ndarray | None:
    """A read-only memory map of an uncompressed member, or None when that is not possible."""
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with path.open("rb") as fp:
        fp.seek(info.header_offset)
        fields = _LOCAL_HEADER.unpack(fp.read(_LOCAL_HEADER.size))
        if fields[0] != b"PK\x03\x04":
            return None
        fp.seek(info.header_offset + _LOCAL_HEADER.size + fields[-2] + fields[-1])
        header = _read_header(fp)
        if header is None:
            return None
        shape, fortran, dtype = header
        offset = fp.tell()
    if dtype.hasobject:
        return None
    if 0 in shape:
        return np.empty(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, order="F" if fortran else "C", offset=offset)


def npz_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an .npz file: memory-mapped when stored uncompressed, else loaded (one file at a time)."""
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = [i for i in zf.infolist() if i.filename.endswith(".npy")]
        with np.load(path, allow_pickle=False) as data:
            for info in infos:
                name = info.filename[:-4]
                arr = _memmap_member(path, info)
                if arr is None:
                    log.debug("loading compressed member %r of %s into memory", name, path)
                    arr = data[name]
                arrays[name] = arr
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise DataError(f"cannot read {path} as an .npz archive: {exc}") from exc
    return arrays

"""Write ONNX models of any size: weights beside the file (external data) once they near protobuf's 2 GiB.

    from converter.onnx_files import write_onnx
    write_onnx(model, "lm.int4.onnx")          # lm.int4.onnx (+ lm.int4.onnx.data when large), checked by ORT

Every LLM writer goes through :func:`write_onnx`: the model is staged in a hidden folder beside the output
(the ``.onnx`` and its ``.onnx.data`` under their final names, since the file records the data file's name),
ONNX Runtime loads the staged copy, then both are renamed into place, data first. Nothing half-written
is left, and an input is never overwritten (the output's data file is named after the output).
``QDQ_EXTERNAL_DATA_THRESHOLD`` (bytes) lowers the threshold, to test the large-model path on a tiny model.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import onnx
import onnx_ir as ir

from runtime.atomic import file_mode, move_into_place, staging_dir

log = logging.getLogger(__name__)

EXTERNAL_DATA_THRESHOLD = 2 * 1024**3 - 64 * 1024**2
"""Weights past this many bytes go to external data (protobuf refuses messages of 2 GiB)."""
THRESHOLD_ENV = "QDQ_EXTERNAL_DATA_THRESHOLD"
DATA_SUFFIX = ".data"


def external_data_threshold() -> int:
    """The threshold in bytes: ``QDQ_EXTERNAL_DATA_THRESHOLD`` if set, else just under 2 GiB."""
    raw = os.environ.get(THRESHOLD_ENV)
    if not raw:
        return EXTERNAL_DATA_THRESHOLD
    try:
        return int(float(raw))
    except ValueError:
        raise ValueError(f"{THRESHOLD_ENV} must be a number of bytes, got {raw!r}") from None


def data_file_name(path: str | os.PathLike[str]) -> str:
    """The external data file written beside ``path``: its name + ``.data``."""
    return Path(path).name + DATA_SUFFIX


def weight_bytes(model: ir.Model | onnx.ModelProto) -> int:
    """Bytes of the model's initializers, from their shapes (nothing is read from external files)."""
    if isinstance(model, onnx.ModelProto):
        return sum(_proto_tensor_bytes(t) for t in model.graph.initializer)
    return sum(v.const_value.nbytes for v in model.graph.initializers.values() if v.const_value is not None)


def _proto_tensor_bytes(t: onnx.TensorProto) -> int:
    n = 1
    for d in t.dims:
        n *= d
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize if t.data_type else 4
    return n * itemsize


def save_onnx(model: ir.Model | onnx.ModelProto, path: str | os.PathLike[str]) -> bool:
    """Save ``model`` at ``path``; weights of more than the threshold go to ``<path>.data``. True if external.

    An onnx-ir model whose tensors still point into another file's external data (loaded lazily) has them
    copied tensor by tensor into its own data file, or into the file itself when small: never left pointing
    at the input's data."""
    path = Path(path)
    external = weight_bytes(model) >= external_data_threshold()
    if isinstance(model, onnx.ModelProto):
        onnx.save_model(model, str(path), format="protobuf", save_as_external_data=external,
                        all_tensors_to_one_file=True, location=data_file_name(path), size_threshold=1024)
    elif external:
        ir.save(model, path, format="protobuf", external_data=data_file_name(path), size_threshold_bytes=1024)
    else:
        ir.external_data.load_to_model(model)  # a small model loaded with external data: inline it
        ir.save(model, path, format="protobuf")  # never inferred from the name (.json would be JSON)
    log.debug("saved %s%s", path, f" + {data_file_name(path)}" if external else "")
    return external


def write_onnx(model: ir.Model | onnx.ModelProto | Callable[[], ir.Model | onnx.ModelProto],
               output: str | os.PathLike[str], *, check: bool = True, what: str = "the quantized model") -> Path:
    """Stage, save (:func:`save_onnx`), check that ONNX Runtime loads it, then move it into place.

    ``model`` may be a function returning the model that drops its own reference, so the writer holds the
    last one and frees the model after saving, before ONNX Runtime loads the file (one copy in memory)."""
    from .loadcheck import ensure_loads
    from .memory import release_memory

    output = Path(output)
    with staging_dir(output) as tmp:
        staged = tmp / output.name
        m = model() if callable(model) else model
        save_onnx(m, staged)
        del m
        if callable(model):
            release_memory()
        if check:
            ensure_loads(staged, what)
        _remove_stale_data(output, tmp)
        publish(tmp, output)
    return output


def publish(staging: Path, output: Path) -> None:
    """Move a staged ``.onnx`` and its data files into place (data first) with a plain file's mode (0666 minus
    the umask; writers stage external data in private 0600 temp files)."""
    for f in staging.iterdir():
        os.chmod(f, file_mode())
    move_into_place(staging, output)


RUN_FROM_DISK_BYTES = 256 * 1024**2
"""Models with more weights than this (or than the external-data threshold) are run from a disk copy."""


def runs_from_disk(model: ir.Model) -> bool:
    """Whether ONNX Runtime should read ``model`` from a disk copy (:func:`disk_copy`) rather than from bytes."""
    return weight_bytes(model) >= min(RUN_FROM_DISK_BYTES, external_data_threshold())


@contextlib.contextmanager
def disk_copy(model: ir.Model) -> Iterator[Path]:
    """A temporary copy of ``model`` on disk, its weights in an external data file aligned to 64 KiB.

    For running a large in-memory model in ONNX Runtime: serializing it to bytes would hold two more
    copies of the weights (the proto and its bytes) next to the session's; from the file, ONNX Runtime
    maps the aligned weights instead of copying them. The model is not changed; the copy is removed."""
    with tempfile.TemporaryDirectory(prefix="qdq-run-") as folder:
        path = Path(folder) / "model.onnx"
        ir.save(model, path, external_data=data_file_name(path), size_threshold_bytes=1024, alignment=65536,
                align_threshold=0)
        yield path


def _remove_stale_data(output: Path, staged: Path) -> None:
    """An older ``<output>.data`` the new file does not use (a forced overwrite of a large model) is removed."""
    old = output.with_name(data_file_name(output))
    if old.exists() and not (staged / old.name).exists():
        old.unlink()


__all__ = ["EXTERNAL_DATA_THRESHOLD", "data_file_name", "disk_copy", "external_data_threshold", "publish",
           "runs_from_disk", "save_onnx", "weight_bytes", "write_onnx"]

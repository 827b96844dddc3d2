"""ONNX Runtime backend: .onnx and .ort files on the CPU, CUDA or TensorRT execution providers."""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .cpu import saturation_warning
from .engine import Engine
from .errors import BackendUnavailableError, EngineError
from .outputs import KINDS, file_kind
from .specs import TensorSpec

log = logging.getLogger(__name__)
_NOT_MODELS = ("npz", "html", "json", "text")  # sniffed kinds ONNX Runtime cannot load

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int16)": np.int16,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "trt": "TensorrtExecutionProvider",
}

_INSTALL_HINT = {
    "CUDAExecutionProvider": "install the GPU build (`pip install 'qdq[gpu]'`, i.e. onnxruntime-gpu, a CUDA 13 build since 1.31) with CUDA 13 and cuDNN 9 libraries on a machine with an NVIDIA GPU",
    "TensorrtExecutionProvider": "install onnxruntime-gpu (`pip install 'qdq[gpu]'`) plus TensorRT (`pip install 'qdq[tensorrt]'`) on a machine with an NVIDIA GPU",
}


def check_first_provider(requested: Sequence[str], running: Sequence[str], label: str,
                         allow_fallback: bool = False) -> None:
    """Raise when ONNX Runtime put another provider first than the one asked for (it falls back silently,
    e.g. to CUDA or CPU when TensorRT's or CUDA's libraries are missing), unless ``allow_fallback``."""
    if not requested or not running or running[0] == requested[0]:
        return
    message = (f"ONNX Runtime could not start {requested[0]} for {label} and fell back to {running[0]}; "
               f"{_INSTALL_HINT.get(requested[0], 'check that provider')} (or pass --allow-fallback)")
    if not allow_fallback:
        raise BackendUnavailableError(message)
    log.warning(message)


def resolve_providers(providers: Sequence[str] | None, allow_fallback: bool = False) -> list[str]:
    """Map short names (cpu, cuda, tensorrt) to ORT provider names and check they are available.

    An unavailable provider is a one-line error naming what to install; with ``allow_fallback`` it is
    dropped with a warning instead (the CPU provider remains), as ONNX Runtime itself would do."""
    import onnxruntime as ort

    if not providers:
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    resolved = []
    for p in providers:
        name = _PROVIDER_ALIASES.get(p.lower(), p) if isinstance(p, str) else p
        if name not in available:
            hint = _INSTALL_HINT.get(name, "check the provider name")
            message = (f"ONNX Runtime execution provider {name} is not available here "
                       f"(available: {', '.join(available)}); {hint}")
            if not allow_fallback:
                raise BackendUnavailableError(message + " (or pass --allow-fallback to run on what is available)")
            log.warning("%s; --allow-fallback: running without it", message)
            continue
        resolved.append(name)
    return resolved or ["CPUExecutionProvider"]


def _spec(node_arg: Any) -> TensorSpec:
    dtype = _ORT_TYPES.get(node_arg.type)
    if dtype is None:
        raise EngineError(f"tensor {node_arg.name!r} has unsupported type {node_arg.type}")
    shape = tuple(d if isinstance(d, (int, str)) else None for d in (node_arg.shape or ()))
    return TensorSpec(node_arg.name, np.dtype(dtype), shape)


def _source_and_label(model: Any) -> tuple[Any, str]:
    """Return what InferenceSession accepts (path str or bytes) and a label for messages."""
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        _check_file_kind(path)
        return str(path), str(path)
    if isinstance(model, (bytes, bytearray)):
        return bytes(model), "<model bytes>"
    if hasattr(model, "SerializeToString"):
        return model.SerializeToString(), f"<ModelProto {getattr(model.graph, 'name', '')}>"
    raise EngineError(f"cannot load a model from {type(model).__name__}; pass a path, bytes or onnx.ModelProto")


def _check_file_kind(path: Path) -> None:
    """Reject files that are plainly not ONNX / ORT models before ORT produces a cryptic message."""
    kind = file_kind(path)
    if kind == "empty":
        raise EngineError(f"{path} is empty; expected an ONNX model (.onnx) or ORT-format model (.ort)")
    if kind in _NOT_MODELS:
        raise EngineError(f"{path} is not an ONNX model (it is {KINDS[kind]})")


_WARNED: set[str] = set()


class OrtEngine(Engine):
    """An ONNX Runtime InferenceSession behind the Engine contract."""

    backend = "onnxruntime"

    def __init__(self, model: Any, providers: Sequence[str] | None = None, session_options: Any = None,
                 provider_options: Mapping[str, Mapping[str, str]] | None = None, allow_fallback: bool = False) -> None:
        """``provider_options`` maps an ORT provider name to its options (as a build manifest records them).
        A session whose first provider is not the first one asked for raises ``BackendUnavailableError``
        unless ``allow_fallback``."""
        import onnxruntime as ort

        source, self.label = _source_and_label(model)
        self.providers = resolve_providers(providers, allow_fallback)
        opts = session_options if session_options is not None else ort.SessionOptions()
        if isinstance(source, str) and source.endswith(".ort"):
            opts.add_session_config_entry("session.load_model_format", "ORT")
        per_provider = [dict((provider_options or {}).get(p, {})) for p in self.providers]
        try:
            self.session = ort.InferenceSession(source, sess_options=opts, providers=self.providers,
                                                provider_options=per_provider)
        except Exception as exc:  # ORT raises several private exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"ONNX Runtime could not load {self.label}: {first}") from exc
        self._run_options = ort.RunOptions()
        self._run_options.log_severity_level = 4  # a failed run raises EngineError; no raw coloured log on stderr
        self._inputs = [_spec(i) for i in self.session.get_inputs()]
        self._outputs = [_spec(o) for o in self.session.get_outputs()]
        log.debug("loaded %s on %s", self.label, self.session.get_providers())
        check_first_provider(self.providers, self.session.get_providers(), self.label, allow_fallback)
        if self.session.get_providers()[0] == "CPUExecutionProvider":
            warning = saturation_warning(self.session.get_modelmeta().custom_metadata_map, self.label)
            if warning and warning not in _WARNED:  # once per model and process (evaluation loops reload)
                _WARNED.add(warning)
                log.warning(warning)

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        names = outputs or [o.name for o in self._outputs]
        try:
            values = self.session.run(names, feeds, self._run_options)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"running {self.label} failed: {msg}") from exc
        return dict(zip(names, values))

    def close(self) -> None:
        self.session = None  # type: ignore[assignment]

"""TensorRT backend: serialized TensorRT 10/11 engines (.engine / .plan) behind the Engine contract.

Device memory and the CUDA stream come from ``torch.cuda``: torch is already a qdq dependency, and its
caching allocator, host<->device copies and streams are all we need (no pycuda / cuda-python). On a
GPU machine this needs a CUDA build of torch next to the ``tensorrt`` wheel. Inputs are copied to the
device per run, input shapes are set per run (checked against the engine's optimization profile),
output buffers are sized from the shapes TensorRT infers, and the engine runs with
``execute_async_v3`` on the engine's own stream.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from .engine import Engine
from .errors import BackendUnavailableError, EngineError, InputError
from .specs import Dim, TensorSpec

log = logging.getLogger(__name__)

INSTALL_HINT = ("install qdq[tensorrt] on a machine with an NVIDIA GPU "
                "(`pip install 'qdq[tensorrt]'`, plus a CUDA build of torch)")

# TensorRT DataType name -> numpy dtype (types numpy cannot hold, e.g. BF16/FP8/INT4, are rejected)
_NP_TYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8,
             "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_, "DOUBLE": np.float64}


def require_tensorrt() -> Any:
    """Import ``tensorrt`` or raise BackendUnavailableError saying what to install."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailableError(
            f"TensorRT is not available here (import tensorrt failed: {exc}); {INSTALL_HINT}") from None
    except OSError as exc:  # wheel present but libnvinfer / CUDA libraries missing
        raise BackendUnavailableError(f"TensorRT could not load its libraries ({exc}); {INSTALL_HINT}") from None
    return trt


def require_cuda_torch(device: int = 0) -> Any:
    """Return ``torch`` when it can reach CUDA device ``device``, else raise BackendUnavailableError."""
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise BackendUnavailableError(
            f"TensorRT engines need an NVIDIA GPU, but torch {torch.__version__} ({build}) sees no CUDA device; "
            f"{INSTALL_HINT}")
    if device >= torch.cuda.device_count():
        raise BackendUnavailableError(f"CUDA device {device} does not exist ({torch.cuda.device_count()} visible)")
    return torch


def trt_logger(trt: Any) -> Any:
    """A TensorRT logger that forwards to Python logging (logger ``runtime.tensorrt``)."""

    class _Logger(trt.ILogger):
        _levels = {trt.ILogger.Severity.INTERNAL_ERROR: logging.ERROR, trt.ILogger.Severity.ERROR: logging.ERROR,
                   trt.ILogger.Severity.WARNING: logging.WARNING, trt.ILogger.Severity.INFO: logging.DEBUG,
                   trt.ILogger.Severity.VERBOSE: logging.DEBUG}

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity: Any, msg: str) -> None:
            level = self._levels.get(severity, logging.INFO)
            if level >= logging.ERROR:
                self.errors.append(msg)
            log.log(level, "TensorRT: %s", msg)

    return _Logger()


def _np_dtype(trt_dtype: Any, name: str) -> np.dtype:
    key = getattr(trt_dtype, "name", str(trt_dtype)).split(".")[-1]
    if key not in _NP_TYPES:
        raise EngineError(f"engine tensor {name!r} has type {key}, which has no numpy equivalent")
    return np.dtype(_NP_TYPES[key])


def _dim_name(hints: dict[str, TensorSpec], name: str, axis: int) -> Dim:
    """The symbolic name the manifest recorded for a dynamic axis, or None."""
    spec = hints.get(name)
    if spec is not None and axis < spec.rank and isinstance(spec.shape[axis], str):
        return spec.shape[axis]
    return None


class TensorRTEngine(Engine):
    """A deserialized TensorRT engine with one execution context on one CUDA device."""

    backend = "tensorrt"

    def __init__(self, path: str | os.PathLike[str], manifest: Any = None, device: int = 0, profile: int = 0) -> None:
        self.label = str(path)
        trt = require_tensorrt()
        torch = require_cuda_torch(device)
        self._trt, self._torch, self._device = trt, torch, torch.device("cuda", device)
        data = Path(path).read_bytes()
        if not data:
            raise EngineError(f"{path} is empty; expected a serialized TensorRT engine")
        built_with = (manifest.build.get("tensorrt_version") if manifest is not None else None)
        if built_with and built_with != trt.__version__:
            raise EngineError(f"{path} was built with TensorRT {built_with} but TensorRT {trt.__version__} is "
                              "installed; engines only load in the version that built them: rebuild it here")
        self._logger = trt_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        with torch.cuda.device(self._device):
            self._engine = self._runtime.deserialize_cuda_engine(data)
            if self._engine is None:
                detail = f": {self._logger.errors[-1]}" if self._logger.errors else ""
                raise EngineError(
                    f"TensorRT {trt.__version__} could not deserialize {path}{detail} (the file is corrupt or "
                    "truncated, or it was built by another TensorRT version or for another GPU)")
            self._context = self._engine.create_execution_context()
            if self._context is None:
                raise EngineError(f"TensorRT could not create an execution context for {path} (out of GPU memory?)")
            self._stream = torch.cuda.Stream(device=self._device)
            if not 0 <= profile < self._engine.num_optimization_profiles:
                raise EngineError(f"{path} has {self._engine.num_optimization_profiles} optimization profile(s); "
                                  f"profile {profile} does not exist")
            if profile:
                self._context.set_optimization_profile_async(profile, self._stream.cuda_stream)
        hints = {s.name: s for s in (*manifest.inputs, *manifest.outputs)} if manifest is not None else {}
        self._inputs: list[TensorSpec] = []
        self._outputs: list[TensorSpec] = []
        self._ranges: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {}
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            dims = tuple(int(d) for d in self._engine.get_tensor_shape(name))
            shape = tuple(d if d >= 0 else _dim_name(hints, name, axis) for axis, d in enumerate(dims))
            spec = TensorSpec(name, _np_dtype(self._engine.get_tensor_dtype(name), name), shape)
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                if self._engine.is_shape_inference_io(name):
                    raise EngineError(f"{path}: input {name!r} is a shape tensor, which this backend does not support")
                self._inputs.append(spec)
                if any(d < 0 for d in dims):
                    lo, _opt, hi = self._engine.get_tensor_profile_shape(name, profile)
                    self._ranges[name] = (tuple(lo), tuple(hi))
            else:
                self._outputs.append(spec)
        log.debug("loaded TensorRT engine %s: %d inputs, %d outputs", path, len(self._inputs), len(self._outputs))

    def _check_profile(self, name: str, shape: tuple[int, ...]) -> None:
        if name not in self._ranges:
            return
        lo, hi = self._ranges[name]
        for axis, (got, a, b) in enumerate(zip(shape, lo, hi)):
            if not a <= got <= b:
                raise InputError(f"input {name!r} has size {got} on axis {axis}; this engine's optimization profile "
                                 f"allows {a}..{b} (min {list(lo)}, max {list(hi)}); rebuild with a wider --shapes")

    def _run(self, feeds: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        torch, ctx = self._torch, self._context
        names = outputs or [o.name for o in self._outputs]
        unknown = [n for n in names if n not in {o.name for o in self._outputs}]
        if unknown:
            raise InputError(f"unknown output {unknown[0]!r}; the engine's outputs are: "
                             f"{', '.join(o.name for o in self._outputs)}")
        keep: list[Any] = []
        results: dict[str, Any] = {}
        with torch.cuda.device(self._device), torch.cuda.stream(self._stream):
            for spec in self._inputs:
                arr = feeds[spec.name]
                self._check_profile(spec.name, arr.shape)
                if not ctx.set_input_shape(spec.name, tuple(arr.shape)):
                    raise InputError(f"TensorRT rejected shape {list(arr.shape)} for input {spec.name!r}")
                dev = torch.from_numpy(arr).to(self._device, non_blocking=True)
                keep.append(dev)
                ctx.set_tensor_address(spec.name, dev.data_ptr())
            missing = ctx.infer_shapes()
            if missing:
                raise EngineError(f"TensorRT could not infer shapes for {', '.join(missing)} from the given inputs")
            for spec in self._outputs:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(spec.name))
                if any(d < 0 for d in shape):
                    raise EngineError(f"output {spec.name!r} has a data-dependent shape {list(shape)}, "
                                      "which this backend does not support")
                buf = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, spec.dtype)).dtype, device=self._device)
                ctx.set_tensor_address(spec.name, buf.data_ptr())
                results[spec.name] = buf
            if not ctx.execute_async_v3(self._stream.cuda_stream):
                detail = f": {self._logger.errors[-1]}" if self._logger.errors else ""
                raise EngineError(f"TensorRT failed to run {self.label}{detail}")
            host = {n: results[n].to("cpu", non_blocking=False) for n in names}
            self._stream.synchronize()
        return {n: t.numpy() for n, t in host.items()}

    def close(self) -> None:
        # the context must go before the engine, the engine before the runtime
        self._context = None
        self._engine = None
        self._runtime = None

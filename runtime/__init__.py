"""qdq runtime: one small inference API over every backend.

    from runtime import Engine
    with Engine.load("model.onnx") as eng:
        outputs = eng.run({"input_ids": ids, "attention_mask": mask})
"""
from . import ort, tensorrt  # noqa: F401  (each backend registers itself with Engine)
from .engine import Engine
from .errors import BackendUnavailableError, EngineError, InputError
from .specs import TensorSpec
from .synthetic import synthetic_feeds

__all__ = ["Engine", "EngineError", "InputError", "BackendUnavailableError", "TensorSpec", "synthetic_feeds"]

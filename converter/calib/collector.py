"""Choose the tensors to observe, expose them as graph outputs, and feed each batch to the observers.

Models are read without their external data; the graph with extra outputs goes to ONNX Runtime as
bytes and the weights are read from the original folder, so nothing is copied and models over 2 GB
(external data) work. An in-memory ``ModelProto`` that refers to external data cannot be resolved:
pass its path instead.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from ..graph_outputs import add_outputs
from ..prepare import needs_preparation, prepare_proto
from . import kernels
from .config import CalibConfig
from .observers import ChannelAbsMaxObserver, Histogram, HistogramObserver, MinMaxObserver
from .table import CalibrationError

if TYPE_CHECKING:
    from runtime import Engine

log = logging.getLogger(__name__)

FLOAT_TYPES = frozenset({onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                         onnx.TensorProto.DOUBLE})
SHAPE_OPS = frozenset({"Shape", "Size"})  # outputs depend on shapes only, not on values
ALIAS_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity"})
"""Ops whose output holds exactly the input's values (same multiset), so it shares the input's range."""


@dataclass
class ModelSource:
    """A model's graph (external weights not loaded), where it came from and its hash."""

    proto: onnx.ModelProto
    path: Path | None
    label: str
    digest: Callable[[], str | None] = field(repr=False)

    @property
    def sha256(self) -> str | None:
        """The SHA-256 of the model file (or serialized proto); None for protos over 2 GB."""
        return self.digest()


def load_model(model: str | os.PathLike[str] | onnx.ModelProto) -> ModelSource:
    """Read a model's graph without loading external weights; the file is hashed in the background."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        if needs_preparation(copy):
            copy = prepare_proto(copy, f"<ModelProto {model.graph.name}>")
        try:
            digest = hashlib.sha256(model.SerializeToString()).hexdigest()
        except ValueError:  # > 2 GB
            digest = None
        return ModelSource(copy, None, f"<ModelProto {model.graph.name}>", lambda: digest)
    path = Path(model)
    if not path.is_file():
        raise CalibrationError(f"model file not found: {path}")
    data = path.read_bytes()
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise CalibrationError(f"{path} is not a readable ONNX model: {exc}") from None
    if needs_preparation(proto):  # calibrate the graph `qdq quantize` will quantize
        proto = prepare_proto(proto, str(path))
    return ModelSource(proto, path, str(path), _hash_in_background(data))


def _hash_in_background(data: bytes) -> Callable[[], str]:
    """Start hashing ``data`` in a thread (hashlib releases the GIL); the callable waits for it."""
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(hashlib.sha256(data).hexdigest()),
                              name="qdq-model-hash", daemon=True)
    thread.start()

    def digest() -> str:
        thread.join()
        return result[0]

    return digest


@dataclass
class Plan:
    """What to observe: ``tensors`` get a range; each is read from ``roots[name]``; ``channel_axes``
    get per-channel abs-max; ``fetch`` are the extra graph outputs; ``from_feeds`` come from the inputs."""

    tensors: list[str]
    roots: dict[str, str]
    channel_axes: dict[str, int]
    fetch: list[str]
    from_feeds: list[str]
    elem_types: dict[str, int] = field(repr=False)

    @property
    def observed(self) -> list[str]:
        return list(dict.fromkeys(self.roots.values()))


def _graph_facts(proto: onnx.ModelProto) -> tuple[dict[str, int], dict[str, int], set[str], set[str]]:
    """Element types and ranks of all top-level values, the constant names and the data-dependent names.

    ONNX shape inference runs only when the model does not already declare every value's type.
    """
    declared = {vi.name for vi in list(proto.graph.value_info) + list(proto.graph.output) + list(proto.graph.input)
                if vi.type.tensor_type.elem_type}
    declared |= {i.name for i in proto.graph.initializer}
    inferred = proto
    if any(o and o not in declared for n in proto.graph.node if n.op_type != "Constant" for o in n.output):
        try:
            inferred = onnx.shape_inference.infer_shapes(proto, strict_mode=False)
        except Exception as exc:  # inference is best effort; declared types still count
            log.warning("ONNX shape inference failed (%s); using declared types only", exc)
    g = inferred.graph
    types: dict[str, int] = {}
    ranks: dict[str, int] = {}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        tt = vi.type.tensor_type
        if tt.elem_type:
            types[vi.name] = tt.elem_type
        if tt.HasField("shape"):
            ranks[vi.name] = len(tt.shape.dim)
    constants: set[str] = set()
    for init in g.initializer:
        types[init.name] = init.data_type
        ranks[init.name] = len(init.dims)
        constants.add(init.name)
    for node in g.node:
        if node.op_type == "Constant" and node.output:
            constants.add(node.output[0])
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                    ranks[node.output[0]] = len(attr.t.dims)
    dynamic = {i.name for i in g.input if i.name not in constants}
    for node in g.node:
        if node.op_type in SHAPE_OPS:
            continue
        has_subgraph = any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute)
        if has_subgraph or any(i in dynamic for i in node.input if i):
            dynamic.update(o for o in node.output if o)
    return types, ranks, constants, dynamic


def plan_tensors(proto: onnx.ModelProto, config: CalibConfig, tensors: Sequence[str] | None = None,
                 quantizable: Sequence[str] = ()) -> Plan:
    """Pick the tensors to calibrate: ``tensors``, else the ``config.scope`` set (see ``CalibConfig``).

    ``quantizable``: the tensors quantize's placement needs (``converter.pipeline.quantizable_tensors``),
    the ``scope="quantizable"`` set.
    """
    types, ranks, constants, dynamic = _graph_facts(proto)
    g = proto.graph
    is_act = lambda t: bool(t) and t in dynamic and types.get(t) in FLOAT_TYPES  # noqa: E731
    if tensors is None and config.scope == "quantizable":
        chosen = [t for t in quantizable if is_act(t)]
        if not chosen:
            raise CalibrationError(
                "the model has no tensor `qdq quantize` can quantize (float activations into MatMul, Gemm "
                "or Conv); to calibrate every activation anyway, use scope='all' (--all-tensors)")
    elif tensors is None:
        chosen = []
        for node in g.node:
            if node.op_type in config.op_types:
                chosen.extend(t for t in list(node.input) + list(node.output) if is_act(t))
        chosen = list(dict.fromkeys(chosen))
    else:
        chosen = list(dict.fromkeys(tensors))
        known = dynamic | constants | {o for n in g.node for o in n.output}
        for t in chosen:
            if t not in known:
                raise CalibrationError(f"tensor '{t}' is not in the model's graph")
            if t in constants or t not in dynamic:
                raise CalibrationError(f"tensor '{t}' is a constant (computed without the model's inputs); "
                                       f"it needs no calibration")
            if types.get(t) not in FLOAT_TYPES:
                kind = onnx.TensorProto.DataType.Name(types[t]) if t in types else "unknown"
                raise CalibrationError(f"tensor '{t}' has element type {kind}; only float tensors can be calibrated")

    producer = {o: n for n in g.node for o in n.output}
    roots = {}
    for t in chosen:
        r = t
        while r in producer and producer[r].op_type in ALIAS_OPS and is_act(producer[r].input[0]):
            r = producer[r].input[0]
        roots[t] = r

    channel_axes: dict[str, int] = {}
    if config.channel_stats:
        for node in g.node:
            if not node.input or not is_act(node.input[0]):
                continue
            axis = None
            if node.op_type == "MatMul" and len(node.input) > 1:
                w = node.input[1]
                if w not in dynamic and ranks.get(w) == 2:
                    axis = -1
            elif node.op_type == "Gemm":
                trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
                axis = 0 if trans_a else -1
            elif node.op_type == "Conv":
                axis = 1
            if axis is not None:
                prev = channel_axes.setdefault(node.input[0], axis)
                if prev != axis:
                    log.warning("tensor %s feeds ops with different channel axes; keeping axis %d", node.input[0], prev)

    graph_inputs = {i.name for i in g.input}
    needed = list(dict.fromkeys(list(roots.values()) + list(channel_axes)))
    existing_outputs = {o.name for o in g.output}
    fetch = [t for t in needed if t not in graph_inputs]
    from_feeds = [t for t in needed if t in graph_inputs]
    log.info("calibrating %d tensors (%d observed after sharing reshape/transpose ranges), "
             "%d with channel statistics; %d extra graph outputs",
             len(chosen), len(set(roots.values())), len(channel_axes),
             len([t for t in fetch if t not in existing_outputs]))
    return Plan(chosen, roots, channel_axes, fetch, from_feeds, types)


@contextlib.contextmanager
def open_engine(source: ModelSource, plan: Plan, session_options: object | None = None) -> Iterator[Engine]:
    """Load the model with ``plan.fetch`` added as graph outputs, via ``runtime.Engine``.

    The modified graph is passed as bytes; external weights are read from the original model's
    folder (ONNX Runtime's external-initializers folder option), so nothing is copied or written.
    Without ``session_options``, ORT's intra-op threads spin during a run (faster) but stop at its
    end, so they leave the cores to the observer threads.
    """
    from runtime import Engine

    proto = add_outputs(source.proto, plan.fetch, plan.elem_types)
    if session_options is None:
        import onnxruntime as ort

        session_options = ort.SessionOptions()
        session_options.add_session_config_entry("session.intra_op.allow_spinning", "1")
        session_options.add_session_config_entry("session.force_spinning_stop", "1")
    locations = _external_locations(proto)
    if locations:
        if source.path is None:
            raise CalibrationError(f"{source.label} keeps weights in external files ({', '.join(sorted(locations))}); "
                                   f"pass the model's path so they can be found")
        base = source.path.parent
        for loc in sorted(locations):
            if not (base / loc).is_file():
                raise CalibrationError(f"external data file {base / loc} of {source.label} is missing")
        session_options.add_session_config_entry(  # type: ignore[attr-defined]
            "session.model_external_initializers_file_folder_path", str(base.resolve()))
        # a large model: no second, pre-packed copy of its weights (ORT maps aligned external data)
        session_options.add_session_config_entry("session.disable_prepacking", "1")  # type: ignore[attr-defined]
    try:
        data = proto.SerializeToString()
    except ValueError as exc:
        raise CalibrationError(f"{source.label} is too large to re-serialize ({exc}); "
                               f"store its weights as external data") from None
    with Engine.load(data, session_options=session_options) as engine:
        yield engine


def _external_locations(proto: onnx.ModelProto) -> set[str]:
    locs = set()
    for init in proto.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            locs.update(e.value for e in init.external_data if e.key == "location")
    return locs


@dataclass
class TensorStats:
    """What the observers saw for one tensor."""

    min: float
    max: float
    count: int
    nonfinite: int
    histogram: Histogram | None


class Collector:
    """Observers for a plan; ``update`` folds one batch of fetched values in, in parallel threads."""

    def __init__(self, plan: Plan, config: CalibConfig) -> None:
        self.plan = plan
        if config.collects_histograms:
            kernels.warm_up()
        make = ((lambda: HistogramObserver(config.num_bins, config.sentinel_abs)) if config.collects_histograms
                else (lambda: MinMaxObserver(config.sentinel_abs)))
        self.observers: dict[str, HistogramObserver | MinMaxObserver] = {t: make() for t in plan.observed}
        self.channels = {t: ChannelAbsMaxObserver(axis, config.sentinel_abs, name=t)
                         for t, axis in plan.channel_axes.items()}
        workers = config.workers or min(4, os.cpu_count() or 1)
        self._workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="qdq-calib") if workers > 1 else None

    def update(self, values: Mapping[str, np.ndarray]) -> None:
        """Fold one batch: ``values`` maps every observed/channel tensor name to its array."""
        jobs = [(t, obs.update) for t, obs in self.observers.items()]
        jobs += [(t, obs.update) for t, obs in self.channels.items()]
        missing = [t for t, _ in jobs if t not in values]
        if missing:
            raise CalibrationError(f"the model run did not return tensor '{missing[0]}'")
        jobs.sort(key=lambda j: -values[j[0]].size)

        def run(bucket: list[tuple[str, object]]) -> None:
            for name, update in bucket:
                try:
                    update(values[name])  # type: ignore[operator]
                except CalibrationError:
                    raise
                except Exception as exc:
                    raise CalibrationError(f"observing tensor '{name}' failed: {exc}") from exc

        if self._pool is None:
            run(jobs)
            return
        # a few buckets per thread, balanced by size (largest first into the lightest bucket): a
        # future per tensor costs more than observing a small tensor
        nbuckets = 4 * self._workers
        buckets: list[list[tuple[str, object]]] = [[] for _ in range(nbuckets)]
        loads = [0] * nbuckets
        for job in jobs:
            i = loads.index(min(loads))
            buckets[i].append(job)
            loads[i] += values[job[0]].size
        for _ in self._pool.map(run, buckets):
            pass

    def stats(self, name: str) -> TensorStats:
        obs = self.observers[name]
        hist = obs.histogram() if isinstance(obs, HistogramObserver) else None
        return TensorStats(obs.min, obs.max, obs.count, obs.nonfinite, hist)

    def channel_absmax(self) -> dict[str, np.ndarray]:
        return {t: o.absmax for t, o in self.channels.items() if o.absmax is not None}

    def channel_mean(self) -> dict[str, np.ndarray]:
        return {t: o.mean for t, o in self.channels.items() if o.mean is not None}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "Collector":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

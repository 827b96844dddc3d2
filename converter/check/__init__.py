"""`qdq check`: will this QDQ model build and run quantized on a target? A static report, no GPU needed.

    from converter.check import check_model
    report = check_model("model.int8.onnx", "tensorrt")
    print(report.render()); assert report.ok

Violations (errors) are what the target rejects or cannot run as quantized: non-zero zero points and
unsupported Q/DQ types for TensorRT, per-channel axes off the output channel, per-channel activations,
Q without DQ, ops the target lacks, unsupported opsets. Warnings are what runs but not as the QDQ
graph suggests: Q/DQ pairs around ops the target does not fuse, half-quantized layers.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from ..targets import TARGETS
from .graph import GraphIndex, qdq_nodes
from .report import ERROR, NOTE, WARNING, CheckError, CheckReport, Finding
from .rules import axis_rules, placement_rules, scale_rules, type_rules, zero_point_rules
from .saturation import saturation_findings, u8s8_layers, weight_range_findings
from .targets import checker_for

log = logging.getLogger(__name__)

__all__ = ["CheckError", "CheckReport", "Finding", "TARGETS", "check_model", "ERROR", "WARNING", "NOTE"]


def check_model(model: str | os.PathLike[str] | Any, target: str, load_test: bool = False,
                cpu: str | None = None) -> CheckReport:
    """Check ``model`` (a path or onnx.ModelProto) against ``target`` (``tensorrt`` or ``ort-cpu``).

    The rules come from the target's profile (``converter.targets``): for ort-cpu, ``cpu`` picks the
    CPU family (``auto``: this machine); None takes the profile the model records, else ``auto``.
    ``load_test`` also lets the target try the model: ONNX Runtime loads and optimizes it (ort-cpu), or
    TensorRT's parser parses it (tensorrt; skipped with a note where TensorRT or a GPU is missing).
    """
    from ..inspect import load_onnx
    from ..targets import METADATA_KEYS, PROFILES, UnknownTargetError, get_profile

    if target not in TARGETS:
        raise CheckError(f"unknown check target {target!r}; choose one of {', '.join(TARGETS)}")
    if isinstance(model, (str, os.PathLike)):
        name = str(model)
        proto = load_onnx(Path(model))
    else:
        name = f"<model {getattr(model.graph, 'name', '')}>"
        proto = model
    recorded = {p.key: p.value for p in proto.metadata_props}.get(METADATA_KEYS["profile"], "")
    try:
        if cpu is None and recorded in PROFILES and PROFILES[recorded].name == target:
            profile = PROFILES[recorded]
        else:
            profile = get_profile(target, cpu or "auto")
    except UnknownTargetError as exc:
        raise CheckError(str(exc)) from None
    rules = checker_for(profile)
    index = GraphIndex(proto)
    qdq = qdq_nodes(index)
    report = CheckReport(profile.key, name, stats={
        "opset": index.opset, "nodes": len(index.graph.node),
        "Q": sum(q.is_q for q in qdq), "DQ": sum(not q.is_q for q in qdq)})
    findings = report.findings
    if not qdq:
        findings.append(Finding(WARNING, "no-qdq", "the model has no QuantizeLinear/DequantizeLinear nodes: "
                                "nothing will run in int8"))
    findings.extend(rules.opset_findings(index))
    findings.extend(rules.op_findings(index))
    for q in qdq:
        findings.extend(scale_rules(q, rules))
        findings.extend(zero_point_rules(q, rules))
        findings.extend(type_rules(q, index, rules))
        findings.extend(axis_rules(q, index, rules))
    findings.extend(placement_rules(index, qdq, rules))
    if profile.backend == "onnxruntime":
        layers = u8s8_layers(index, qdq)
        findings.extend(weight_range_findings(layers, profile))
        findings.extend(saturation_findings(layers))
    if load_test:
        from .loadtest import ort_cpu_load_test, tensorrt_parse_test

        test = ort_cpu_load_test if target == "ort-cpu" else tensorrt_parse_test
        findings.extend(test(proto.SerializeToString()))
    log.info("%s for %s: %d violation(s), %d warning(s)", name, profile.key, len(report.violations), len(report.warnings))
    return report

"""Exclusions that match nothing are an error: a typo in ``--exclude`` would quietly quantize everything."""
from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

import onnx_ir as ir
from onnx_ir.traversal import RecursiveGraphIterator

from .config import QuantConfig
from .errors import QuantizationError


def node_names_and_ops(model: ir.Model) -> list[tuple[str, str]]:
    """``(name, op_type)`` of every node, subgraphs included."""
    return [(node.name or "", node.op_type) for node in RecursiveGraphIterator(model.graph)]


def near_matches(word: str, candidates: Iterable[str], prefix: str = "", n: int = 4) -> str:
    """`` (near: 'a', 'b')`` for the candidates closest to ``word`` (case-insensitive), or ``""``."""
    by_lower: dict[str, str] = {}
    for c in candidates:
        by_lower.setdefault(c.lower(), c)
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=n, cutoff=0.6)
    if not close:  # a short word inside long names ("query" in "/layer.0/attention/self/query/MatMul")
        close = [c for c in by_lower if word.lower() in c][:n]
    return f" (near: {', '.join(repr(prefix + by_lower[c]) for c in close)})" if close else ""


def check_exclusions(config: QuantConfig, nodes: Iterable[tuple[str, str]]) -> None:
    """Raise ``QuantizationError`` naming each exclusion of ``config`` that matches none of ``nodes``
    (``(name, op_type)`` pairs), with the closest node names or op types."""
    nodes = list(nodes)
    names = {name for name, _ in nodes if name}
    ops = {op for _, op in nodes}
    problems = [f"'{name}' matches no node name{near_matches(name, names)}"
                for name in config.exclude_nodes if name not in names]
    problems += [f"'op:{op}' matches no op type of the model{near_matches(op, ops, 'op:')}"
                 for op in config.exclude_op_types if op not in ops]
    for pattern in config.exclude_patterns:
        regex = re.compile(pattern)
        if not any(regex.search(name) for name in names):
            bare = pattern.strip("^$")
            problems.append(f"'re:{pattern}' matches no node name{near_matches(bare, names)}")
    if problems:
        raise QuantizationError(f"--exclude {'; '.join(problems)} (`qdq inspect MODEL` lists the nodes)")

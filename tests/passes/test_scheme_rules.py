"""Scale/zero-point math and the op rule registry."""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
import pytest

from converter.quant.config import QuantConfig
from converter.quant.errors import QuantizationError
from converter.quant.rules import RULES, SCALE_SHARING_OPS, rule_for
from converter.quant.scheme import (
    activation_qparams,
    bias_qparams,
    dequantize,
    fake_quantize,
    quantize,
    weight_qparams,
)


def test_uint8_activation_is_asymmetric_and_zero_is_exact() -> None:
    qp = activation_qparams(-0.5, 2.0, "uint8")
    assert qp.zero_point.dtype == np.uint8 and 0 < int(qp.zero_point) < 255
    assert np.isclose(float(qp.scale), 2.5 / 255)
    assert fake_quantize(np.zeros(3, np.float32), qp).tolist() == [0.0, 0.0, 0.0]
    x = np.linspace(-0.5, 2.0, 101, dtype=np.float32)
    assert np.abs(fake_quantize(x, qp) - x).max() <= float(qp.scale) / 2 + 1e-7


def test_int8_activation_is_symmetric() -> None:
    qp = activation_qparams(-0.5, 2.0, "int8")
    assert int(qp.zero_point) == 0 and np.isclose(float(qp.scale), 2.0 / 127)


def test_weight_scales_are_per_output_channel(rng: np.random.Generator) -> None:
    w = rng.standard_normal((16, 4)).astype(np.float32) * np.array([1, 10, 100, 0], np.float32)
    qp = weight_qparams(w, axis=1)
    assert qp.scale.shape == (4,) and qp.axis == 1
    q = quantize(w, qp)
    assert q.dtype == np.int8 and np.abs(q).max() <= 127
    err = np.abs(dequantize(q, qp) - w).max(axis=0)
    assert np.all(err <= qp.scale / 2 + 1e-6)
    assert np.all(dequantize(q, qp)[:, 3] == 0)  # an all-zero channel stays zero


def test_bias_scale_is_input_times_weight_scale(rng: np.random.Generator) -> None:
    wqp = weight_qparams(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), axis=0)
    bqp = bias_qparams(np.float32(0.02), wqp)
    assert bqp.dtype == "int32" and np.allclose(bqp.scale, 0.02 * wqp.scale)


def test_bad_range_names_the_tensor() -> None:
    with pytest.raises(QuantizationError, match="'act7'"):
        activation_qparams(float("nan"), 1.0, name="act7")


def test_rules_cover_linear_ops_and_axes() -> None:
    assert {"MatMul", "Gemm", "Conv"} <= set(RULES)
    assert rule_for("Softmax") is None and rule_for("MatMul", "com.microsoft") is None
    gemm_t = ir.Node("", "Gemm", [], attributes=[ir.AttrInt64("transB", 1)])
    assert RULES["Gemm"].weight_out_axis(gemm_t) == 0 and RULES["Gemm"].weight_in_axis(gemm_t) == 1
    conv = ir.Node("", "Conv", [])
    assert RULES["Conv"].weight_out_axis(conv) == 0 and RULES["Conv"].bias == 2
    assert RULES["Conv"].quantize_output and not RULES["MatMul"].quantize_output
    assert {"Reshape", "Transpose", "MaxPool"} <= SCALE_SHARING_OPS


def test_config_validates() -> None:
    with pytest.raises(QuantizationError, match="smoothquant"):
        QuantConfig(smoothquant=1.5)
    with pytest.raises(QuantizationError, match="target"):
        QuantConfig(target="gpu")  # type: ignore[arg-type]
    with pytest.raises(QuantizationError, match="pattern"):
        QuantConfig(exclude_patterns=("(",))
    assert QuantConfig().resolved_activation_dtype == "uint8"
    assert QuantConfig(target="tensorrt").resolved_activation_dtype == "int8"
    cfg = QuantConfig(exclude_nodes=("a",), exclude_op_types=("Gemm",), exclude_patterns=(r"^pool",))
    assert cfg.is_excluded("a", "MatMul") and cfg.is_excluded("x", "Gemm") and cfg.is_excluded("pooler", "MatMul")
    assert not cfg.is_excluded("b", "MatMul")

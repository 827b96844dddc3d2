"""Small ONNX graphs built to look like what third-party exporters write (paddle2onnx, tf2onnx, old zoo files)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def _conv_bn(prefix: str, x: str, cin: int, cout: int, rng: np.random.Generator, bn: bool,
             nodes: list, inits: list) -> str:
    w = (rng.standard_normal((cout, cin, 3, 3)) * (1.0 / np.sqrt(cin * 9))).astype(np.float32)
    inits.append(numpy_helper.from_array(w, f"{prefix}.w"))
    conv_out = f"{prefix}.conv"
    if bn:
        nodes.append(helper.make_node("Conv", [x, f"{prefix}.w"], [conv_out], pads=[1, 1, 1, 1], name=f"{prefix}/Conv"))
        for name, arr in (("scale", rng.uniform(0.5, 1.5, cout)), ("bias", rng.normal(0, 0.1, cout)),
                          ("mean", rng.normal(0, 0.1, cout)), ("var", rng.uniform(0.5, 2.0, cout))):
            inits.append(numpy_helper.from_array(arr.astype(np.float32), f"{prefix}.bn.{name}"))
        bn_out = f"{prefix}.bn"
        nodes.append(helper.make_node("BatchNormalization", [conv_out] + [f"{prefix}.bn.{k}" for k in
                                      ("scale", "bias", "mean", "var")], [bn_out], epsilon=1e-5, name=f"{prefix}/BN"))
        conv_out = bn_out
    else:
        b = rng.normal(0, 0.1, cout).astype(np.float32)
        inits.append(numpy_helper.from_array(b, f"{prefix}.b"))
        nodes.append(helper.make_node("Conv", [x, f"{prefix}.w", f"{prefix}.b"], [conv_out], pads=[1, 1, 1, 1],
                                      name=f"{prefix}/Conv"))
    out = f"{prefix}.relu"
    nodes.append(helper.make_node("Relu", [conv_out], [out], name=f"{prefix}/Relu"))
    return out


def conv_net(*, opset: int = 13, bn: bool = False, batch: int | str = "N", hw: tuple = (32, 32),
             channels: int = 3, layout: str = "NCHW", inits_as_inputs: bool = False, keep_shapes: bool = True,
             with_if: bool = False, seed: int = 0) -> onnx.ModelProto:
    """Conv(-BN)-Relu x3, global average pool, Gemm-like MatMul head: an image classifier in miniature."""
    rng = np.random.default_rng(seed)
    nodes: list = []
    inits: list = []
    x = "image"
    if layout == "NHWC":
        nodes.append(helper.make_node("Transpose", ["image"], ["image_nchw"], perm=[0, 3, 1, 2], name="to_nchw"))
        x = "image_nchw"
    h = _conv_bn("c1", x, channels, 8, rng, bn, nodes, inits)
    h = _conv_bn("c2", h, 8, 16, rng, bn, nodes, inits)
    h = _conv_bn("c3", h, 16, 16, rng, bn, nodes, inits)
    nodes.append(helper.make_node("GlobalAveragePool", [h], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="flatten"))
    fc_w = rng.standard_normal((16, 10)).astype(np.float32) * 0.25
    fc_b = rng.normal(0, 0.1, 10).astype(np.float32)
    inits += [numpy_helper.from_array(fc_w, "fc.w"), numpy_helper.from_array(fc_b, "fc.b")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.w", "fc.b"], ["logits"], name="fc"))
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])]
    if with_if:  # a tf2onnx-style guard: If(cond) picks between two float branches
        nodes.append(helper.make_node("ReduceSum", ["logits"], ["total"], keepdims=0, name="total"))
        zero = numpy_helper.from_array(np.array(0.0, np.float32), "zero")
        inits.append(zero)
        nodes.append(helper.make_node("Greater", ["total", "zero"], ["positive"], name="is_positive"))
        then_g = helper.make_graph([helper.make_node("Relu", ["logits"], ["t_out"])], "then", [],
                                   [helper.make_tensor_value_info("t_out", TensorProto.FLOAT, None)])
        else_g = helper.make_graph([helper.make_node("Neg", ["logits"], ["e_out"])], "else", [],
                                   [helper.make_tensor_value_info("e_out", TensorProto.FLOAT, None)])
        nodes.append(helper.make_node("If", ["positive"], ["guarded"], then_branch=then_g, else_branch=else_g,
                                      name="guard/If"))
        outputs.append(helper.make_tensor_value_info("guarded", TensorProto.FLOAT, None))
    shape = [batch, channels, *hw] if layout == "NCHW" else [batch, *hw, channels]
    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)]
    if inits_as_inputs:
        inputs += [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = helper.make_graph(nodes, "thirdparty_net", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="mimic")
    model.ir_version = 6 if opset < 13 else 8
    if keep_shapes:
        model = onnx.shape_inference.infer_shapes(model)
    return model


def save(model: onnx.ModelProto, folder: Path, name: str) -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path


def photo_folder(folder: Path, count: int = 16, size: tuple[int, int] = (40, 56), seed: int = 0) -> Path:
    """Smooth random colour pictures (gradients plus blobs) as PNG files of ``size`` (h, w)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:size[0], 0:size[1]]
    for i in range(count):
        img = np.zeros((*size, 3), np.float32)
        for c in range(3):
            a, b = rng.uniform(-1, 1, 2)
            img[..., c] = 128 + 60 * np.sin(a * xx / 7 + b * yy / 5 + c)
        cy, cx = rng.integers(0, size[0]), rng.integers(0, size[1])
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < 60] = rng.uniform(0, 255, 3)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{i:02d}.png")
    return folder

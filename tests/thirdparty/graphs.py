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


def yolo_head(hw: int = 16) -> onnx.ModelProto:
    """A YOLOv8-shaped detector head in miniature: Conv-Relu features, a 1x1 box Conv (4 channels) and a 1x1
    class Conv (2 classes) joined by a Concat, reshaped to anchors, Split, box * stride and Sigmoid(class),
    joined again as the output [N, 6, hw*hw]. Feature k is relu(image channel k); class 0's logit is
    4 * (f0 + f1) - 6: negative unless channels 0 and 1 are both bright at one place (an "object")."""
    nodes: list = []
    w = np.zeros((3, 3, 3, 3), np.float32)
    for k in range(3):
        w[k, k, 1, 1] = 1.0
    box_w = np.random.default_rng(0).normal(0, 0.5, (4, 3, 1, 1)).astype(np.float32)
    cls_w = np.zeros((2, 3, 1, 1), np.float32)
    cls_w[0, :2] = 4.0
    cls_w[1, 2] = 2.0
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w, "stem.w"), (np.zeros(3, np.float32), "stem.b"), (box_w, "box.w"), (np.zeros(4, np.float32), "box.b"),
        (cls_w, "cls.w"), (np.array([-6.0, -5.0], np.float32), "cls.b"),
        (np.array([0, 6, -1], np.int64), "anchors"), (np.array([4, 2], np.int64), "split"),
        (np.array(8.0, np.float32), "stride"))]
    nodes += [
        helper.make_node("Conv", ["image", "stem.w", "stem.b"], ["f.conv"], pads=[1, 1, 1, 1], name="/stem/Conv"),
        helper.make_node("Relu", ["f.conv"], ["f"], name="/stem/Relu"),
        helper.make_node("Conv", ["f", "box.w", "box.b"], ["box"], name="/head/box/Conv"),
        helper.make_node("Conv", ["f", "cls.w", "cls.b"], ["cls"], name="/head/cls/Conv"),
        helper.make_node("Concat", ["box", "cls"], ["joined"], axis=1, name="/head/Concat"),
        helper.make_node("Reshape", ["joined", "anchors"], ["flat"], name="/head/Reshape"),
        helper.make_node("Split", ["flat", "split"], ["box_flat", "cls_flat"], axis=1, name="/head/Split"),
        helper.make_node("Mul", ["box_flat", "stride"], ["box_px"], name="/head/Mul"),
        helper.make_node("Sigmoid", ["cls_flat"], ["scores"], name="/head/Sigmoid"),
        helper.make_node("Concat", ["box_px", "scores"], ["output0"], axis=1, name="/head/Concat_out"),
    ]
    graph = helper.make_graph(nodes, "yolo_head", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                               ["N", 3, hw, hw])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["N", 6, hw * hw])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="mimic")
    model.ir_version = 8
    return onnx.shape_inference.infer_shapes(model)

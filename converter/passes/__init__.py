"""Graph passes on onnx-ir for static INT8: preprocessing, SmoothQuant, QDQ placement and insertion.

``converter.pipeline`` strings them together; ``converter.quantize`` is the public entry point.
"""

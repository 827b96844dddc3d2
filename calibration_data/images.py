"""Image calibration data: a folder of pictures, resized and scaled to a model's image input."""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from runtime.specs import TensorSpec

from .batching import fixed, plan_batches
from .errors import DataError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
LAYOUTS = ("NCHW", "NHWC")
RESIZES = ("stretch", "keep-ratio")
CHANNEL_ORDERS = ("RGB", "BGR")
STRIDE = 32  # keep-ratio on a model with dynamic height/width pads up to a multiple of this (detector strides)


@dataclass(frozen=True)
class ImageLayout:
    """Where pixels go in the model's tensor.

    ``layout`` is NCHW, NHWC, NHW (grayscale without channel axis) or NF (flattened grayscale);
    ``size`` is (height, width), or None to use the first image's size.
    """

    layout: str
    channels: int
    size: tuple[int, int] | None


def _size_option(size: int | Sequence[int] | None, name: str) -> tuple[int, int] | None:
    if size is None:
        return None
    pair = (size, size) if isinstance(size, int) else tuple(size)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise DataError(f"input {name!r}: size must be a positive int or (height, width), got {size!r}")
    return pair  # type: ignore[return-value]


def _spatial_size(spec: TensorSpec, h_axis: int, size: tuple[int, int] | None) -> tuple[int, int] | None:
    spec_hw = (fixed(spec.shape[h_axis]), fixed(spec.shape[h_axis + 1]))
    if size is not None:
        for want, got in zip(spec_hw, size, strict=True):
            if want is not None and want != got:
                raise DataError(f"input {spec.name!r} fixes height x width {spec_hw}, but size={size} was given")
        return size
    if all(spec_hw):
        return spec_hw  # type: ignore[return-value]
    if any(spec_hw):
        raise DataError(f"input {spec.name!r} fixes only one of height and width ({spec.describe()}); pass size=(h, w)")
    return None


def image_layout(
    spec: TensorSpec, *, layout: str | None = None, size: int | Sequence[int] | None = None
) -> ImageLayout:
    """Work out channels, axis order and target size of an image input from its spec and the options."""
    size_hw = _size_option(size, spec.name)
    if spec.rank == 2:
        features = fixed(spec.shape[1])
        if size_hw is None and features is not None and math.isqrt(features) ** 2 == features:
            size_hw = (math.isqrt(features),) * 2  # type: ignore[assignment]
        if size_hw is None or (features is not None and size_hw[0] * size_hw[1] != features):
            raise DataError(f"input {spec.name!r} takes flattened images ({spec.describe()}); "
                            f"pass size=(h, w) with h*w equal to its feature count")
        return ImageLayout("NF", 1, size_hw)
    if spec.rank == 3:
        return ImageLayout("NHW", 1, _spatial_size(spec, 1, size_hw))
    if spec.rank != 4:
        raise DataError(f"input {spec.name!r}: images need a rank 2, 3 or 4 input, but it has rank {spec.rank} "
                        f"({spec.describe()})")
    if layout is None:
        layout = "NHWC" if fixed(spec.shape[3]) in (1, 3) and fixed(spec.shape[1]) not in (1, 3) else "NCHW"
    layout = layout.upper()
    if layout not in LAYOUTS:
        raise DataError(f"input {spec.name!r}: layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    c_axis, h_axis = (1, 2) if layout == "NCHW" else (3, 1)
    channels = fixed(spec.shape[c_axis])
    if channels is None:
        log.info("input %r has no fixed channel count; using 3 (RGB)", spec.name)
        channels = 3
    if channels not in (1, 3):
        raise DataError(f"input {spec.name!r}: {channels} channels on axis {c_axis} ({layout}); "
                        f"images give 1 (grayscale) or 3 (RGB)")
    return ImageLayout(layout, channels, _spatial_size(spec, h_axis, size_hw))


def list_images(source: Path) -> list[Path]:
    """Image files of a folder (recursively, sorted) or the file itself."""
    if source.is_file():
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"{source} is not an image file ({', '.join(IMAGE_SUFFIXES)})")
        return [source]
    return sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                  and p.is_file() and not p.name.startswith("."))


def _fit_note(img: "Image.Image", channels: int, size: tuple[int, int] | None) -> str | None:  # noqa: F821
    """What fitting ``img`` to ``channels`` and ``size`` (h, w) changes, if anything."""
    mode, width, height = img.mode, img.width, img.height
    have = 3 if mode == "P" else len(img.getbands())  # a palette image is colour
    changes = []
    if have != channels:
        changes.append(f"{mode} -> {'grayscale' if channels == 1 else 'RGB'}")
    if size is not None and (width, height) != (size[1], size[0]):
        changes.append(f"{height}x{width} -> {size[0]}x{size[1]}")
    return ", ".join(changes) or None


def _fit_inside(img_hw: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    """(h, w) of an image of ``img_hw`` scaled, keeping its aspect ratio, to fit inside ``size``."""
    ratio = min(size[0] / img_hw[0], size[1] / img_hw[1])
    return (max(1, min(size[0], round(img_hw[0] * ratio))), max(1, min(size[1], round(img_hw[1] * ratio))))


def load_image(path: Path, channels: int, size: tuple[int, int] | None,
               on_fit: Callable[[Path, str], object] | None = None, keep_ratio: bool = False) -> np.ndarray:
    """One image as uint8 [height, width, channels], converted to grayscale/RGB and resized to ``size`` (h, w).

    ``keep_ratio``: scaled to fit inside ``size`` with its aspect ratio kept (the result may be smaller
    than ``size``; the caller pads). ``on_fit(path, change)`` is told when the image's channel count or
    size had to change."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            note = _fit_note(img, channels, size)
            if note is not None and on_fit is not None:
                on_fit(path, note)
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and keep_ratio:
                h, w = _fit_inside((img.height, img.width), size)
                if (img.height, img.width) != (h, w):
                    img = img.resize((w, h), Image.Resampling.BILINEAR)
            elif size is not None and img.size != (size[1], size[0]):
                img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return pixels.reshape(pixels.shape[0], pixels.shape[1], channels)


def _per_channel(value: float | Sequence[float], channels: int, what: str, name: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float32).reshape(-1)
    if arr.size not in (1, channels):
        raise DataError(f"input {name!r}: {what} needs 1 or {channels} values, got {arr.size}")
    return arr


class ImageReader:
    """Batches of images from a folder (or one file), shaped for a model's single image input.

    Float inputs get pixels / ``max_value`` (so [0, 1]), then ``(x - mean) / std`` when given;
    integer inputs (e.g. uint8) get the raw pixel values. ``channel_order`` "BGR" reverses the colour
    channels (paddle/cv2-trained models). ``resize`` "stretch" resizes to the size; "keep-ratio" scales
    each image to fit inside it with its aspect ratio kept and places it top-left, the rest zeros (after
    normalization); on a model with dynamic height/width the size is then rounded up to a multiple of 32.
    """

    OPTIONS = frozenset({"size", "mean", "std", "layout", "max_value", "resize", "channel_order"})

    def __init__(
        self,
        source: str | Path,
        input_specs: Sequence[TensorSpec],
        *,
        batch_size: int = 8,
        num_samples: int | None = None,
        size: int | Sequence[int] | None = None,
        mean: float | Sequence[float] | None = None,
        std: float | Sequence[float] | None = None,
        layout: str | None = None,
        max_value: float = 255.0,
        resize: str = "stretch",
        channel_order: str = "RGB",
    ) -> None:
        self.path = Path(source)
        if not self.path.exists():
            raise DataError(f"image data not found: {self.path}")
        self.plan = plan_batches(input_specs, batch_size, num_samples)
        if len(input_specs) != 1:
            extra = ", ".join(repr(s.name) for s in input_specs[1:])
            raise DataError(f"image data feeds one input, but the model also needs {extra}")
        self.spec = input_specs[0]
        if resize not in RESIZES:
            raise DataError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
        if channel_order.upper() not in CHANNEL_ORDERS:
            raise DataError(f"channel order must be one of {', '.join(CHANNEL_ORDERS)}, got {channel_order!r}")
        self.keep_ratio = resize == "keep-ratio"
        self.bgr = channel_order.upper() == "BGR"
        self.layout = image_layout(self.spec, layout=layout, size=size)
        self.fit_size = self.layout.size  # keep-ratio: images fit inside this; the canvas may be larger
        if self.keep_ratio:
            self.layout = self._stride_padded(self.layout)
        dtype = np.dtype(self.spec.dtype)
        if dtype.kind not in "fiu":
            raise DataError(f"input {self.spec.name!r}: images cannot fill a {dtype.name} input")
        if dtype.kind != "f" and (mean is not None or std is not None):
            raise DataError(f"input {self.spec.name!r} is {dtype.name}: mean/std normalization needs a float input")
        if not max_value or max_value <= 0:
            raise DataError(f"max_value must be positive, got {max_value!r}")
        self.max_value = float(max_value)
        channels = self.layout.channels
        self.mean = None if mean is None else _per_channel(mean, channels, "mean", self.spec.name)
        self.std = None if std is None else _per_channel(std, channels, "std", self.spec.name)
        if self.std is not None and np.any(self.std == 0):
            raise DataError(f"input {self.spec.name!r}: std must not contain zeros")
        self.files = list_images(self.path)
        if not self.files:
            raise DataError(f"no samples in {self.path}: no image files ({', '.join(IMAGE_SUFFIXES)})")
        self._told_fit = False

    def _stride_padded(self, layout: ImageLayout) -> ImageLayout:
        """With keep-ratio: a dynamic height/width is rounded up to a multiple of STRIDE."""
        if layout.size is None or layout.layout not in LAYOUTS:
            return layout
        h_axis = 2 if layout.layout == "NCHW" else 1
        dims = (fixed(self.spec.shape[h_axis]), fixed(self.spec.shape[h_axis + 1]))
        size = tuple(v if d is not None else -(-v // STRIDE) * STRIDE for v, d in zip(layout.size, dims, strict=True))
        if size != layout.size:
            log.info("input %r: keep-ratio pads %dx%d up to %dx%d (a multiple of %d)", self.spec.name,
                     *layout.size, *size, STRIDE)
        return ImageLayout(layout.layout, layout.channels, size)  # type: ignore[arg-type]

    def _fitted(self, path: Path, change: str) -> None:
        """Log, once per reader, that images are converted or resized to fit the input."""
        if not self._told_fit:
            self._told_fit = True
            log.warning("%s (%s) does not match input %s: images are converted and resized to fit "
                        "(said once)", path, change, self.spec.describe())

    def _to_tensor(self, pixels: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
        """uint8 [N, H, W, C] to the spec's dtype and layout (``valid`` [N, H, W]: False where padded)."""
        dtype = np.dtype(self.spec.dtype)
        if self.bgr:
            pixels = pixels[..., ::-1]
        if dtype.kind == "f":
            x = pixels.astype(np.float32) / np.float32(self.max_value)
            if self.mean is not None:
                x = x - self.mean
            if self.std is not None:
                x = x / self.std
        else:
            x = pixels
        if valid is not None:
            x = np.where(valid[..., None], x, np.zeros((), x.dtype))
        layout = self.layout.layout
        if layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        elif layout == "NHW":
            x = x[..., 0]
        elif layout == "NF":
            x = x.reshape(x.shape[0], -1)
        return np.ascontiguousarray(x, dtype=dtype)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        size, fit = self.layout.size, self.fit_size
        for files in self.plan.batches(self.files, self.path):
            images = []
            for path in files:
                pixels = load_image(path, self.layout.channels, fit, on_fit=self._fitted, keep_ratio=self.keep_ratio)
                size = size or pixels.shape[:2]
                fit = fit or size
                images.append(pixels)
            if not self.keep_ratio:
                yield {self.spec.name: self._to_tensor(np.stack(images))}
                continue
            canvas = np.zeros((len(images), *size, self.layout.channels), np.uint8)
            valid = np.zeros((len(images), *size), bool)
            for i, img in enumerate(images):
                canvas[i, :img.shape[0], :img.shape[1]] = img
                valid[i, :img.shape[0], :img.shape[1]] = True
            yield {self.spec.name: self._to_tensor(canvas, valid)}

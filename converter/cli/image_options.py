"""Image preprocessing options (--image-size, --mean, --std, --scale, --layout, --resize, --channel-order),
shared by every command that reads --data, and their translation into the image reader's options."""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click

_FLAGS = {"size": "--image-size", "mean": "--mean", "std": "--std", "max_value": "--scale", "layout": "--layout",
          "resize": "--resize", "channel_order": "--channel-order"}


@dataclass(frozen=True)
class ImageOptions:
    """The image options as given (None: not given); ``size`` is (height, width)."""

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    max_value: float | None = None
    layout: str | None = None
    resize: str | None = None
    channel_order: str | None = None

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def reader_options(self, source: str | Path, specs: Sequence) -> dict[str, Any]:
        """Options for ``open_data`` on ``source``: empty unless given; a one-line error when they are
        given for data that is not images, or when an image input has a dynamic size and no --image-size."""
        from calibration_data import DataError
        from calibration_data.builtin import builtin_path, is_builtin
        from calibration_data.dispatch import reader_kind
        from calibration_data.images import image_layout

        given = self.given()
        path = builtin_path(str(source)) if is_builtin(source) else Path(source)
        kind = reader_kind(path) if path.exists() else None
        if kind != "images":
            if given:
                flags = ", ".join(_FLAGS[k] for k in given)
                raise DataError(f"{flags} apply to image data only; --data {source} is "
                                f"{kind + ' data' if kind else 'not found'}")
            return {}
        if len(specs) == 1:
            layout = image_layout(specs[0], layout=self.layout, size=self.size)
            if layout.size is None:
                raise DataError(f"input {specs[0].describe()} has a dynamic height/width: pass --image-size H,W "
                                f"(the size the model's own preprocessing feeds)")
        return given


def _numbers(kind: type, count: tuple[int, ...]) -> Callable:
    def parse(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple | None:
        if value is None:
            return None
        try:
            parts = tuple(kind(v) for v in value.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise click.BadParameter(f"expected {' or '.join(str(c) for c in count)} comma-separated numbers, "
                                     f"got {value!r}") from None
        if len(parts) not in count:
            raise click.BadParameter(f"expected {' or '.join(str(c) for c in count)} comma-separated numbers, "
                                     f"got {value!r}")
        return parts

    return parse


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, int] | None:
    parts = _numbers(int, (1, 2))(ctx, param, value)
    if parts is None:
        return None
    if any(v <= 0 for v in parts):
        raise click.BadParameter(f"sizes must be positive, got {value!r}")
    return (parts[0], parts[-1])


def image_options(fn: Callable) -> Callable:
    """Add the image preprocessing options to a command; it receives them as ``image: ImageOptions``."""
    opts = [
        click.option("--image-size", "image_size", metavar="H,W", callback=_size, default=None,
                     help="Images: height,width fed to the model (one number: square). Default: the input's "
                          "fixed size; required when the input's height/width are dynamic."),
        click.option("--mean", "image_mean", metavar="R,G,B", callback=_numbers(float, (1, 3)),
                     help="Images: subtracted after scaling, per channel (e.g. 0.485,0.456,0.406)."),
        click.option("--std", "image_std", metavar="R,G,B", callback=_numbers(float, (1, 3)),
                     help="Images: divided by after --mean, per channel (e.g. 0.229,0.224,0.225)."),
        click.option("--scale", "image_scale", type=click.FloatRange(min=0, min_open=True), default=None,
                     help="Images: the pixel value that becomes 1.0: 255 (default) feeds 0..1, 1 feeds raw 0..255."),
        click.option("--layout", "image_layout", type=click.Choice(["NCHW", "NHWC"], case_sensitive=False),
                     default=None, help="Images: axis order of the input (default: inferred from its shape)."),
        click.option("--resize", "image_resize", type=click.Choice(["stretch", "keep-ratio"]), default=None,
                     help="Images: stretch to the size (default), or keep the aspect ratio and pad with zeros "
                          "(letterbox, top-left; dynamic height/width padded to a multiple of 32)."),
        click.option("--channel-order", "image_channel_order", type=click.Choice(["RGB", "BGR"], case_sensitive=False),
                     default=None, help="Images: colour channel order (default RGB; paddle/cv2 models use BGR)."),
    ]

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        layout, order = kwargs.pop("image_layout"), kwargs.pop("image_channel_order")
        kwargs["image"] = ImageOptions(size=kwargs.pop("image_size"), mean=kwargs.pop("image_mean"),
                                       std=kwargs.pop("image_std"), max_value=kwargs.pop("image_scale"),
                                       layout=layout.upper() if layout else None, resize=kwargs.pop("image_resize"),
                                       channel_order=order.upper() if order else None)
        return fn(*args, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper

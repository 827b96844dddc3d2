"""A self-contained HTML page for a CompareReport: tables plus inline SVG plots (matplotlib)."""
from __future__ import annotations

import html
import io
import math
import os
from pathlib import Path

import numpy as np

from .compare import CompareReport, LayerError


def _svg(fig) -> str:  # noqa: ANN001
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _num(v: float | None, spec: str = ".4f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float) and math.isinf(v):
        return "inf"
    return format(v, spec)


def _finite(v: float, cap: float = 80.0) -> float:
    return cap if math.isinf(v) else v


def snr_plot(report: CompareReport) -> str:
    """Bars: each quantized tensor's SNR against its FP32 twin, in graph order; dots: its own Q/DQ noise."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = report.layers
    fig, ax = plt.subplots(figsize=(max(8, 0.18 * len(layers) + 3), 4))
    x = np.arange(len(layers))
    ops = sorted({l.pair.consumer_ops[0] if l.pair.consumer_ops else "?" for l in layers})
    palette = dict(zip(ops, plt.cm.tab10.colors))
    colors = [palette[l.pair.consumer_ops[0] if l.pair.consumer_ops else "?"] for l in layers]
    ax.bar(x, [_finite(l.stats.snr_db) for l in layers], color=colors, label="vs FP32 twin (accumulated)")
    ax.plot(x, [_finite(l.local.snr_db) for l in layers], "k.", label="own Q/DQ noise")
    for op, c in palette.items():
        ax.bar([0], [0], color=c, label=f"feeds {op}")
    ax.set_xlabel("quantized tensor (graph order)")
    ax.set_ylabel("SNR (dB, higher is better)")
    ax.set_xlim(-1, len(layers))
    ax.legend(fontsize=7, ncol=3, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    svg = _svg(fig)
    plt.close(fig)
    return svg


def histogram_plots(layers: list[LayerError], columns: int = 2) -> str:
    """FP32 activation histograms (log counts) of the given layers with their Q/DQ range marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [l for l in layers if l.observer.count]
    if not shown:
        return "<p>No activation histograms (no per-layer data).</p>"
    rows = math.ceil(len(shown) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6 * columns, 2.6 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, shown):
        h = layer.observer.histogram().trimmed()
        edges = h.edges
        ax.stairs(np.maximum(h.counts, 0.8), edges, fill=True, color="#4a7bb7")
        ax.set_yscale("log")
        if layer.pair.qrange:
            for v in layer.pair.qrange:
                ax.axvline(v, color="#d62728", ls="--", lw=1)
        ax.set_title(f"{layer.pair.float_name[:48]}  ({_num(layer.stats.snr_db, '.1f')} dB)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    svg = _svg(fig)
    plt.close(fig)
    return svg


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}td.l{text-align:left}
h2{margin-top:1.6em}.plot svg{max-width:100%;height:auto}"""


def render_html(report: CompareReport, worst: int = 8) -> str:
    """The whole page as a string."""
    e = html.escape
    out_rows = "".join(
        f"<tr><td class=l>{e(n)}</td><td>{_num(s.mean_cosine)}</td><td>{_num(s.min_cosine)}</td>"
        f"<td>{_num(s.snr_db, '.1f')}</td><td>{_num(s.max_abs_err, '.4g')}</td><td>{_num(s.mean_abs_err, '.4g')}</td>"
        f"<td>{_num(s.top1_agreement, '.3f')}</td></tr>" for n, s in report.outputs.items())
    parts = [
        f"<!doctype html><html><head><meta charset=utf-8><title>qdq compare</title><style>{_CSS}</style></head><body>",
        "<h1>Quantized vs FP32</h1>",
        f"<p>reference <code>{e(report.reference)}</code><br>candidate <code>{e(report.candidate)}</code><br>"
        f"{report.samples} samples, {report.seconds:.1f} s</p>",
        "<h2>Outputs</h2><table><tr><th>output</th><th>mean cos</th><th>min cos</th><th>SNR dB</th><th>max abs</th>"
        f"<th>mean abs</th><th>top-1</th></tr>{out_rows}</table>",
    ]
    if report.layers:
        ranked = report.worst_layers()
        layer_rows = "".join(
            f"<tr><td>{i + 1}</td><td class=l>{e(l.pair.float_name)}</td><td class=l>{e(','.join(l.pair.consumer_ops))}</td>"
            f"<td>{_num(l.stats.snr_db, '.1f')}</td><td>{_num(l.local.snr_db, '.1f')}</td><td>{_num(l.stats.mean_cosine)}</td>"
            f"<td>{_num(l.stats.max_abs_err, '.4g')}</td></tr>" for i, l in enumerate(ranked))
        parts += [
            "<h2>Error per layer</h2><div class='plot' id='snr-plot'>", snr_plot(report), "</div>",
            f"<h2>Activation histograms of the {min(worst, len(ranked))} worst layers</h2>"
            "<p>FP32 values seen on the data; dashed red lines: the range the Q/DQ can represent.</p>"
            "<div class='plot' id='hist-plot'>", histogram_plots(ranked[:worst]), "</div>",
            "<h2>All quantized tensors, worst first</h2><table><tr><th>#</th><th>tensor</th><th>consumers</th>"
            f"<th>SNR dB</th><th>own Q/DQ dB</th><th>mean cos</th><th>max abs</th></tr>{layer_rows}</table>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts)


def write_html(report: CompareReport, path: str | os.PathLike[str], worst: int = 8) -> Path:
    """Render and write the page atomically."""
    from runtime.atomic import atomic_write

    text = render_html(report, worst)
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))

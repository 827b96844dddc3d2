"""`qdq check`: static compatibility report of a QDQ model for a target; exit 1 on a violation."""
from __future__ import annotations

import json
from pathlib import Path

import click

from .target_options import cpu_option, target_option


@click.command("check")
@click.argument("model", type=click.Path(path_type=Path))
@target_option("Target whose profile the model is checked against.", required=True)
@cpu_option(default=None)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--load-test", is_flag=True,
              help="Also let the target try the model (ONNX Runtime load + fusion report; TensorRT parser if installed).")
@click.option("--strict", is_flag=True, help="Exit 1 on warnings too.")
def command(model: Path, target: str, cpu: str | None, as_json: bool, load_test: bool, strict: bool) -> None:
    """Check that MODEL's Q/DQ nodes and ops suit --target: zero points, types, axes, placement, ops, opset;
    for ort-cpu also the weight range of the CPU profile (--cpu; default: the profile the model records,
    else this machine's) and the saturation risk on this CPU."""
    from converter.check import check_model

    report = check_model(model, target, load_test=load_test, cpu=cpu)
    click.echo(json.dumps(report.to_dict(), indent=1) if as_json else report.render())
    if not report.ok or (strict and report.warnings):
        raise click.exceptions.Exit(1)

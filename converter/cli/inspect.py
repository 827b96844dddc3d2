"""`qdq inspect`: what is in a model file."""
from __future__ import annotations

import json
from pathlib import Path

import click


def print_summary(s: "ModelSummary") -> None:  # noqa: F821
    click.echo(f"model     {s.path}")
    click.echo(f"opsets    {', '.join(f'{d} {v}' for d, v in s.opsets.items())}")
    where = "in initializers" if not s.constant_parameters else (
        f"({s.constant_parameters / 1e6:.2f} M of them in {s.constant_nodes} Constant nodes)")
    click.echo(f"size      {s.size_bytes / 1e6:.1f} MB, {s.parameters / 1e6:.2f} M parameters {where}")
    if s.weight_dtypes:
        click.echo("weights   " + ", ".join(f"{d} {n / 1e6:.2f} M" if n >= 10_000 else f"{d} {n}"
                                            for d, n in s.weight_dtypes.items()))
    click.echo(f"nodes     {sum(s.op_counts.values())} ({s.qdq_count} Q/DQ)")
    for line in s.inputs:
        click.echo(f"input     {line}")
    for line in s.outputs:
        click.echo(f"output    {line}")
    ops = ", ".join(f"{op} {n}" for op, n in s.op_counts.most_common())
    click.echo(f"ops       {ops}")


@click.command("inspect")
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def command(model: Path, as_json: bool) -> None:
    """Show a model's inputs, outputs, opset, op histogram, size, weight dtypes and Q/DQ count."""
    from converter.inspect import summarize

    s = summarize(model)
    if as_json:
        click.echo(json.dumps(s.to_dict(), indent=1))
    else:
        print_summary(s)

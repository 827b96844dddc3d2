"""Write docs/cli.md, the CLI reference, from the Click commands themselves (so it cannot drift).

    python tools/gen_cli_reference.py            # rewrite docs/cli.md
    python tools/gen_cli_reference.py --check    # exit 1 if docs/cli.md differs from the commands

``tests/test_docs.py`` regenerates the page and asserts it equals the committed file: after adding or
changing a command or option, run the first line and commit docs/cli.md.
"""
from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
OUTPUT = ROOT / "docs" / "cli.md"
_WIDTH = 100

_HEADER = """# CLI reference

Generated from the Click commands by `python tools/gen_cli_reference.py`; do not edit by hand
(`tests/test_docs.py` fails when this page and the commands differ). What each command is for, with
examples: [usage.md](usage.md). Every command also takes `-h` / `--help`.
"""


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _type_name(param: click.Parameter) -> str:
    if isinstance(param, click.Option) and param.metavar:
        return f"`{_cell(param.metavar)}`"
    if isinstance(param, click.Option) and param.is_flag and not param.count:
        return "flag"
    if isinstance(param.type, click.Choice):
        return " \\| ".join(f"`{c}`" for c in param.type.choices)
    if isinstance(param, click.Option) and param.count:
        return "count"
    if isinstance(param.type, click.types._NumberRangeBase):
        kind = "float" if isinstance(param.type, click.FloatRange) else "integer"
        return f"{kind}, {_cell(param.type._describe_range())}"
    return param.type.name.lower()


def _default(param: click.Parameter) -> str:
    if not isinstance(param, click.Option) or param.required:
        return "required" if param.required else ""
    default = param.default
    if callable(default) or default is None or param.show_default is False or type(default).__name__ == "Sentinel":
        return ""
    if param.is_flag and not param.secondary_opts:
        return ""
    if param.is_flag and param.secondary_opts:
        return f"`{(param.opts if default else param.secondary_opts)[0]}`"
    if isinstance(default, (list, tuple)):
        return ", ".join(f"`{d}`" for d in default) if default else ""
    return f"`{default}`"


def _names(param: click.Parameter) -> str:
    if isinstance(param, click.Argument):
        return f"`{param.human_readable_name}`"
    names = ", ".join(f"`{o}`" for o in param.opts)
    if param.secondary_opts:
        names += " / " + ", ".join(f"`{o}`" for o in param.secondary_opts)
    return names


def _is_help(param: click.Parameter) -> bool:
    return isinstance(param, click.Option) and param.is_eager and "--help" in param.opts


def _command_section(group: click.Group, name: str, cmd: click.Command) -> list[str]:
    parent = click.Context(group, info_name="qdq", **group.context_settings)
    ctx = click.Context(cmd, info_name=name, parent=parent, terminal_width=_WIDTH, max_content_width=_WIDTH)
    usage = " ".join(cmd.collect_usage_pieces(ctx))
    lines = [f"## `qdq {name}`", "", "```text", f"qdq {name} {usage}", "```", ""]
    if cmd.help:
        lines += [inspect.cleandoc(click.unstyle(cmd.help).split("\f")[0]), ""]
    params = [p for p in cmd.get_params(ctx) if not getattr(p, "hidden", False) and not _is_help(p)]
    if params:
        lines += ["| argument / option | type | default | help |", "| --- | --- | --- | --- |"]
        for p in params:
            help_text = _cell(getattr(p, "help", None) or "")
            if isinstance(p, click.Option) and p.multiple and "repeat" not in help_text.lower():
                help_text = (help_text + " (repeatable)").strip()
            lines.append(f"| {_names(p)} | {_type_name(p)} | {_default(p)} | {help_text} |")
        lines.append("")
    return lines


def render(group: click.Group | None = None) -> str:
    """The whole reference page for ``group`` (default: the ``qdq`` command group)."""
    if group is None:
        from converter.cli import main as group
    ctx = click.Context(group, info_name="qdq", terminal_width=_WIDTH, max_content_width=_WIDTH,
                        **group.context_settings)
    lines = [_HEADER, "## `qdq` (global options)", "", "```text", "qdq [OPTIONS] COMMAND [ARGS]...", "```", ""]
    lines += ["| option | type | default | help |", "| --- | --- | --- | --- |"]
    lines += [f"| {_names(p)} | {_type_name(p)} | {_default(p)} | {_cell(getattr(p, 'help', None) or '')} |"
              for p in group.get_params(ctx)]
    lines += ["", "Commands: " + ", ".join(f"[`{n}`](#qdq-{n})" for n in sorted(group.commands)), ""]
    for name in sorted(group.commands):
        lines += _command_section(group, name, group.commands[name])
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        same = args.output.exists() and args.output.read_text(encoding="utf-8") == text
        print(f"{args.output}: {'up to date' if same else 'out of date: run python tools/gen_cli_reference.py'}")
        return 0 if same else 1
    args.output.parent.mkdir(parents=True, exist_ok=True)
    staged = args.output.with_suffix(".md.tmp")
    staged.write_text(text, encoding="utf-8")
    staged.replace(args.output)
    print(f"wrote {args.output} ({len(text.splitlines())} lines)")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())

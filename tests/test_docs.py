"""The docs cannot drift from the code: the CLI reference is regenerated, every `qdq <command> --option` the
README and docs/ name exists, and README.md's shell and Python examples run.

README shell blocks whose first line is a ``# slow: <reason>`` comment (installs, MiniLM or LLM exports) are
skipped with that reason; the others run in a temporary folder through the ``converter.cli:main`` entry
point (the one ``pip install`` makes ``qdq``), with ``model.onnx`` = the digits CNN and ``samples.npz`` =
64 of its inputs: the files the README's "ONNX file you already have" quick start names.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import click
import numpy as np
import pytest

from converter.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOC_PAGES = sorted((ROOT / "docs").glob("*.md"))
_FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SPAN = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
_SLOW = re.compile(r"^#\s*slow:\s*(.+)$")


def _blocks(text: str, languages: tuple[str, ...]) -> list[tuple[int, str]]:
    """(line number, body) of each fenced block in one of ``languages``."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(2)) for m in _FENCE.finditer(text)
            if m.group(1) in languages]


def _invocations(text: str) -> list[str]:
    """Every `qdq ...` command line in shell blocks and inline code spans of a markdown page."""
    found = []
    for _, body in _blocks(text, ("sh", "bash", "shell", "console")):
        for line in body.splitlines():
            line = line.split(" #", 1)[0].strip()
            found += [m.group(0) for m in re.finditer(r"(?<![\w./-])qdq [^;&|]*", line)]
    prose = _FENCE.sub("", text)
    for span in _SPAN.findall(prose):
        found += [m.group(0) for m in re.finditer(r"(?<![\w./-])qdq [a-z][^`]*", span)]
    return found


def _option_names(cmd: click.Command) -> set[str]:
    return {o for p in cmd.params if isinstance(p, click.Option) for o in [*p.opts, *p.secondary_opts]} | {
        "-h", "--help"}


def _unknown(invocation: str) -> list[str]:
    """What ``invocation`` names that the CLI does not have: the command, or options of it."""
    words = invocation.replace("\\|", "|").split()
    global_opts = _option_names(main)
    rest = words[1:]
    while rest and rest[0].startswith("-"):  # qdq -v quantize ...
        if rest[0].split("=")[0] not in global_opts:
            return [rest[0]]
        rest = rest[1:]
    if not rest or rest[0] in ("...",):
        return []
    name = rest[0]
    cmd = main.commands.get(name)
    if cmd is None:
        return [f"command '{name}'"]
    known = _option_names(cmd) | global_opts
    options = {m.group(0) for w in rest[1:] for m in [re.match(r"--?[A-Za-z][\w-]*", w.strip("[](),"))] if m}
    return sorted(o for o in options if o not in known)


def _generator():
    """tools/gen_cli_reference.py (tools/ is not a package)."""
    from tool_modules import load_tool

    return load_tool("gen_cli_reference")


def test_cli_reference_is_current() -> None:
    generator = _generator()
    assert generator.OUTPUT.read_text(encoding="utf-8") == generator.render(main), (
        "docs/cli.md is out of date: run python tools/gen_cli_reference.py")


def test_cli_reference_names_every_command_and_option() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    sections = dict(re.findall(r"^## `qdq ([a-z0-9-]+)`\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))
    assert set(sections) == set(main.commands)
    for name, body in sections.items():
        documented = set(re.findall(r"`(--?[A-Za-z][\w-]*)`", body))
        expected = _option_names(main.commands[name]) - {"-h", "--help"}
        assert documented == expected, f"qdq {name}: reference {sorted(documented ^ expected)} differ"


@pytest.mark.parametrize("page", [README, *DOC_PAGES], ids=lambda p: p.name)
def test_documented_commands_and_options_exist(page: Path) -> None:
    invocations = _invocations(page.read_text(encoding="utf-8"))
    bad = {inv: unknown for inv in invocations if (unknown := _unknown(inv))}
    assert not bad, f"{page.name} names what the CLI lacks: {bad}"


def test_the_option_check_can_fail() -> None:
    assert _unknown("qdq quantize model.onnx --calib c.json --no-such-option 3") == ["--no-such-option"]
    assert _unknown("qdq quantise model.onnx") == ["command 'quantise'"]
    assert _unknown("qdq quantize-weights lm.onnx [--no-act-order] --weights int4\\|int8") == []
    assert len(_invocations(README.read_text(encoding="utf-8"))) >= 10


def _readme_shell_blocks() -> list:
    text = README.read_text(encoding="utf-8")
    params = []
    for line, body in _blocks(text, ("sh", "bash", "shell")):
        first = body.strip().splitlines()[0]
        slow = _SLOW.match(first)
        marks = [pytest.mark.skip(reason=f"README.md:{line} is slow: {slow.group(1)}")] if slow else []
        params.append(pytest.param(body, id=f"README.md:{line}", marks=marks))
    return params


@pytest.fixture
def quickstart_dir(tmp_path: Path, digits_cnn_onnx: Path, digits_split: dict) -> Path:
    """A folder with the README quick start's inputs and a `qdq` on PATH that runs this checkout."""
    (tmp_path / "model.onnx").write_bytes(digits_cnn_onnx.read_bytes())
    np.savez(tmp_path / "samples.npz", image=digits_split["X_test"][:64])
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "qdq"
    code = "import sys; from converter.cli import main; sys.exit(main(prog_name='qdq'))"
    shim.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} -c {shlex.quote(code)} \"$@\"\n")
    shim.chmod(0o755)
    return tmp_path


def _env(folder: Path) -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PATH=f"{folder / '.bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def test_readme_has_fast_and_marked_slow_shell_examples() -> None:
    params = _readme_shell_blocks()
    fast = [p for p in params if not p.marks]
    assert fast and len(fast) < len(params), "README.md needs runnable shell examples (and slow ones marked)"


@pytest.mark.parametrize("block", _readme_shell_blocks())
def test_readme_shell_example_runs(block: str, quickstart_dir: Path) -> None:
    script = "set -eu\n" + block
    done = subprocess.run(["bash", "-c", script], cwd=quickstart_dir, env=_env(quickstart_dir),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{block}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert "Error:" not in done.stdout + done.stderr


def test_readme_python_example_runs(quickstart_dir: Path) -> None:
    blocks = _blocks(README.read_text(encoding="utf-8"), ("python",))
    assert blocks, "README.md has no Python quick start"
    for line, body in blocks:
        done = subprocess.run([sys.executable, "-c", body], cwd=quickstart_dir, env=_env(quickstart_dir),
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"README.md:{line}\n{done.stderr}"
    assert (quickstart_dir / "model.int8.onnx").exists()


def test_python_api_page_example_runs(quickstart_dir: Path) -> None:
    blocks = _blocks((ROOT / "docs" / "python-api.md").read_text(encoding="utf-8"), ("python",))
    line, body = blocks[0]
    done = subprocess.run([sys.executable, "-c", body], cwd=quickstart_dir, env=_env(quickstart_dir),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"docs/python-api.md:{line}\n{done.stderr}"
    assert "[]" in done.stdout  # check_model found no violation
    assert list((quickstart_dir / "build").glob("*.manifest.json"))


def _anchor(heading: str) -> str:
    """GitHub's anchor for a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", [README, ROOT / "CHANGELOG.md", *DOC_PAGES], ids=lambda p: p.name)
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md":
            headings = re.findall(r"^#+ (.+)$", _FENCE.sub("", dest.read_text(encoding="utf-8")), re.MULTILINE)
            if anchor not in {_anchor(h) for h in headings}:
                broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"

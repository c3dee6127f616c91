"""Every `voxline` command's --help carries examples, and every example parses against the command it names."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from voxline.cli import main

SHELL_BREAKS = {"|", ">", ">>", "<", "&&", ";"}


def _commands(cmd: click.Command = main, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(cmd, click.Group):
        ctx = click.Context(cmd)
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            assert sub is not None
            yield from _commands(sub, (*path, name))


def _example_args(help_text: str) -> Iterator[list[str]]:
    """The arguments after `voxline` on each line of the Example(s) blocks, up to a pipe or redirect."""
    in_block = False
    for line in help_text.splitlines():
        if line.strip() in ("Example:", "Examples:"):
            in_block = True
            continue
        if not line.strip():
            in_block = False
        line = re.split(r"\s{2,}[#(]", line.strip())[0]  # trailing notes: "  # once", "  (clients send ...)"
        tokens = shlex.split(line, comments=True) if in_block else []
        if "voxline" in tokens:
            args = tokens[tokens.index("voxline") + 1:]
            yield args[: next((i for i, t in enumerate(args) if t in SHELL_BREAKS), len(args))]


def _check_parses(args: list[str]) -> None:
    """Resolve the sub-command and parse its options (an unknown one fails); typed values are converted too,
    except paths, which name example files that don't exist here."""
    cmd: click.Command = main
    name = "voxline"
    while isinstance(cmd, click.Group) and args and not args[0].startswith("-"):
        sub = cmd.get_command(click.Context(cmd), args[0])
        assert sub is not None, f"no command {args[0]!r} under {name}"
        cmd, name, args = sub, args[0], args[1:]
    ctx = click.Context(cmd, info_name=name)
    values, _, _ = cmd.make_parser(ctx).parse_args(list(args))  # the bare parser: no required or exists checks
    for param in cmd.params:
        value = values.get(param.name)  # a param the example leaves out holds click's UNSET marker
        if isinstance(value, str | tuple | list) and not isinstance(param.type, click.Path):
            param.type_cast_value(ctx, value)


@pytest.mark.parametrize("path", list(_commands()), ids=lambda p: " ".join(p) or "voxline")
def test_every_help_has_working_examples(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output
    examples = list(_example_args(result.output))
    assert examples, result.output
    for args in examples:
        _check_parses(args)

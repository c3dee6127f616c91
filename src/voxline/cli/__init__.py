"""The `voxline` command. Sub-commands live in their own modules and are imported only when used, so that
`voxline --help` and quick commands start fast (the speech stack imports heavy native libraries)."""

from __future__ import annotations

import importlib
import importlib.util
import logging

import click

from voxline import __version__
from voxline.models.store import disable_hubs

# name -> "module:attribute"; each attribute is a click command or group.
SUBCOMMANDS: dict[str, str] = {
    "models": "voxline.cli.models:models",
    "stt": "voxline.cli.stt:stt",
    "tts": "voxline.cli.tts:tts",
    "serve": "voxline.cli.serve:serve",
    "chat": "voxline.cli.chat:chat",
    "audio": "voxline.cli.audio:audio",
    "providers": "voxline.cli.providers:providers",
    "fakes": "voxline.cli.fakes:fakes",
    "cost": "voxline.cli.cost:cost",
    "sessions": "voxline.cli.sessions:sessions",
    "voices": "voxline.cli.voices:voices",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n, t in SUBCOMMANDS.items() if importlib.util.find_spec(t.partition(":")[0]))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="voxline")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def main(verbose: int) -> None:
    """voxline: real-time voice agents, offline by default.

    \b
    Examples:
      voxline models pull default        # fetch the offline speech stack (once)
      voxline tts "Hello there." -o hello.wav
      voxline stt hello.wav --format json
    """
    disable_hubs()
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

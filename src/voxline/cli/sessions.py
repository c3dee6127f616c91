"""`voxline sessions`: list, show and export the session records (transcripts, timelines, events, cost)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from voxline.cli.common import reports_errors
from voxline.records import default_path, get_session, list_sessions, session_text

_db = click.option("--db", "db", type=click.Path(dir_okay=False, path_type=Path), default=None,
                   help="Records database (default: $XDG_DATA_HOME/voxline/sessions.db).")


def _when(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


@click.group()
def sessions() -> None:
    """Recorded sessions: what was said, when, what went wrong, what it cost.

    \b
    Examples:
      voxline sessions list
      voxline sessions show 3f2a
    """


@sessions.command("list")
@_db
@click.option("-n", "--limit", default=50, show_default=True, help="How many sessions, newest first.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@reports_errors
def list_cmd(db: Path | None, limit: int, as_json: bool) -> None:
    """The most recent sessions.

    \b
    Examples:
      voxline sessions list
      voxline sessions list -n 10 --json
      voxline sessions list --db ./sessions.db
    """
    rows = list_sessions(db or default_path(), limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("id", "started", "ended", "turns", "errors", "cost $")
    for r in rows:
        cost = "-" if r["cost_usd"] is None else f"{r['cost_usd']:.4f}"
        table.add_row(r["id"], _when(r["started_at"]), _when(r["ended_at"]) if r["ended_at"] else "(open)",
                      str(r["turns"]), str(r["errors"]), cost)
    Console().print(table)


@sessions.command("show")
@click.argument("session_id")
@_db
@reports_errors
def show_cmd(session_id: str, db: Path | None) -> None:
    """One session's transcript, per-turn latency and events (an id prefix is enough).

    \b
    Examples:
      voxline sessions show 3f2a
      voxline sessions show 3f2a --db ./sessions.db
    """
    click.echo(session_text(get_session(db or default_path(), session_id)), nl=False)


@sessions.command("export")
@click.argument("session_id")
@_db
@click.option("--format", "fmt", type=click.Choice(["json", "txt"]), default="json", show_default=True)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to a file instead of stdout.")
@reports_errors
def export_cmd(session_id: str, db: Path | None, fmt: str, output: Path | None) -> None:
    """Everything recorded about one session, as JSON or text.

    \b
    Examples:
      voxline sessions export 3f2a > call.json
      voxline sessions export 3f2a --format txt -o call.txt
    """
    session = get_session(db or default_path(), session_id)
    text = json.dumps(session, indent=2, ensure_ascii=False) + "\n" if fmt == "json" else session_text(session)
    if output is None:
        click.echo(text, nl=False)
    else:
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:  # a missing folder, a file where a folder should be, a full disk
            raise click.ClickException(f"cannot write {output}: {exc.strerror or exc}") from exc

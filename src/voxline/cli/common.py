"""Pieces the sub-commands share: error reporting and progress bars."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn

from voxline.errors import VoxlineError

P = ParamSpec("P")
R = TypeVar("R")

stderr = Console(stderr=True)


def reports_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn a `VoxlineError` into a one-line message and exit status 1 instead of a traceback."""

    @wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except VoxlineError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@contextmanager
def byte_progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback `(description, done, total)` drawn as one rich bar per description prefix."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=stderr, disable=not enabled, transient=False) as bar:
        tasks: dict[str, Any] = {}

        def update(description: str, done: int, total: int) -> None:
            key = description.split(":")[0]
            if key not in tasks:
                tasks[key] = bar.add_task(description, total=total or None)
            bar.update(tasks[key], description=description, completed=done, total=total or None)

        yield update

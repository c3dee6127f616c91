"""`voxline serve`: the agent server on the offline default (or the providers the config names)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from voxline.cli.common import byte_progress, reports_errors, stderr


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="TCP port.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Agent config (TOML); defaults to the built-in offline voice assistant.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@reports_errors
def serve(host: str, port: int, config_path: Path | None, log_level: str) -> None:
    """Start the voice agent server: browser page at /, WebSocket at /ws, metrics at /metrics.

    \b
    Pulls the default models first if they are missing (a progress bar shows it).
    Examples:
      voxline serve
      voxline serve --host 0.0.0.0 --port 9000 --config my_agent.toml
    """
    import uvicorn

    from voxline.agent.config import AgentConfig
    from voxline.agent.stack import LOCAL, build_stack
    from voxline.models.catalog import DEFAULT_SET
    from voxline.models.store import ModelStore
    from voxline.server import create_app

    config = AgentConfig.load(config_path)
    store = ModelStore()
    p = config.providers
    if {p.stt, p.llm, p.tts} & LOCAL or config.turn.detector != "energy":
        with byte_progress() as progress:
            store.ensure(DEFAULT_SET, progress)
    stderr.print("loading models ...")
    stack = build_stack(config, store)
    app = create_app(stack, config, twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN"))
    stderr.print(f"[bold green]voxline[/] listening on [link]http://{host}:{port}/[/link] "
                 f"(stt={stack.stt.name}, llm={stack.llm.name}, tts={stack.tts.name}, "
                 f"turns={config.turn.detector}); Ctrl+C to stop")
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=24 << 20)

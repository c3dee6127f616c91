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
@click.option("--api-key", "api_keys", multiple=True, metavar="KEY",
              help="Require this API key (repeatable; also VOXLINE_API_KEYS=k1,k2). None: an open server.")
@click.option("--api-keys-file", type=click.Path(dir_okay=False, path_type=Path), envvar="VOXLINE_API_KEYS_FILE",
              help="File of API keys, one a line (# comments).")
@click.option("--rate-limit", default=120.0, show_default=True, type=float, envvar="VOXLINE_RATE_LIMIT",
              help="Requests (and new sessions) per minute per key.")
@click.option("--max-sessions", default=10, show_default=True, type=int, envvar="VOXLINE_MAX_SESSIONS",
              help="Concurrent sessions per key.")
@click.option("--max-session-length", default=3600.0, show_default=True, type=float, envvar="VOXLINE_MAX_SESSION_S",
              help="End sessions after this many seconds (0: never).")
@reports_errors
def serve(host: str, port: int, config_path: Path | None, log_level: str, api_keys: tuple[str, ...],
          api_keys_file: Path | None, rate_limit: float, max_sessions: int, max_session_length: float) -> None:
    """Start the voice agent server: browser page at /, WebSocket at /ws, metrics at /metrics.

    \b
    Pulls the default models first if they are missing (a progress bar shows it).
    Examples:
      voxline serve
      voxline serve --host 0.0.0.0 --port 9000 --config my_agent.toml
      VOXLINE_API_KEYS=$(cat keys) voxline serve --host 0.0.0.0   (clients send Authorization: Bearer KEY;
        the browser page: http://HOST:PORT/?key=KEY)
    """
    import uvicorn

    from voxline.agent.config import AgentConfig
    from voxline.agent.stack import LOCAL, build_stack
    from voxline.auth import AccessPolicy, redact_server_logs, warn_if_exposed
    from voxline.models.catalog import DEFAULT_SET
    from voxline.models.store import ModelStore
    from voxline.server import create_app

    access = AccessPolicy.build(api_keys, keys_file=api_keys_file, requests_per_minute=rate_limit,
                                max_sessions=max_sessions, max_session_s=max_session_length)
    config = AgentConfig.load(config_path)
    store = ModelStore()
    p = config.providers
    if {p.stt, p.llm, p.tts} & LOCAL or config.turn.detector != "energy":
        with byte_progress() as progress:
            store.ensure(DEFAULT_SET, progress)
    stderr.print("loading models ...")
    stack = build_stack(config, store)
    app = create_app(stack, config, twilio_auth_token=os.environ.get("TWILIO_AUTH_TOKEN"), access=access)
    if access.keys:
        stderr.print(f"API keys required ({len(access.keys)} configured; "
                     f"{access.requests_per_minute:g} requests/min, {access.max_sessions} sessions per key)")
    warn_if_exposed(host, access)
    redact_server_logs()  # --log-level debug logs raw WebSocket handshakes
    stderr.print(f"[bold green]voxline[/] listening on [link]http://{host}:{port}/[/link] "
                 f"(stt={stack.stt.name}, llm={stack.llm.name}, tts={stack.tts.name}, "
                 f"turns={config.turn.detector}); Ctrl+C to stop")
    uvicorn.run(app, host=host, port=port, log_level=log_level, ws_max_size=24 << 20)

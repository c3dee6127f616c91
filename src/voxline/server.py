"""The ASGI app: the browser page, the WebSocket sessions, Prometheus metrics and a health check.

`create_app(stack, config)` takes an already-built `Stack`, so models are loaded once per process by the caller
(`voxline serve`) and every connection shares them.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from voxline import __version__
from voxline.agent.config import AgentConfig
from voxline.agent.metrics import SessionMetrics
from voxline.agent.session import Observer, Session
from voxline.agent.stack import Stack
from voxline.transports.websocket import Limits, WebSocketTransport

log = logging.getLogger(__name__)


def create_app(stack: Stack, config: AgentConfig, *, observers: Sequence[Observer] = (),
               limits: Limits | None = None) -> Starlette:
    metrics = SessionMetrics()
    web = resources.files("voxline").joinpath("web")
    live: dict[str, Session] = {}

    async def page(request: Request) -> Response:
        return HTMLResponse(web.joinpath("index.html").read_text())

    async def ws_session(ws: WebSocket) -> None:
        session_id = uuid.uuid4().hex[:12]
        transport = WebSocketTransport(ws, default_output_rate=config.output.sample_rate, limits=limits)
        if not await transport.start(session_id):
            return
        session = Session(stack, config, transport, observers=(metrics, *observers), session_id=session_id)
        live[session_id] = session
        metrics.sessions.inc()
        log.info("session %s started", session_id)
        try:
            await session.run()
        except Exception as exc:  # one broken session must not take the server down
            log.exception("session %s failed", session_id)
            await transport.send_event({"type": "error", "source": "session", "message": str(exc)})
        finally:
            metrics.sessions.dec()
            live.pop(session_id, None)
            await transport.close()
            log.info("session %s ended", session_id)

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "version": __version__, "sessions": len(live),
                                "providers": {"stt": stack.stt.name, "llm": stack.llm.name, "tts": stack.tts.name}}
        return JSONResponse(body)

    routes = [Route("/", page), Route("/metrics", prometheus), Route("/healthz", healthz),
              WebSocketRoute("/ws", ws_session)]
    if web.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=str(web)), name="static"))
    app = Starlette(routes=routes)
    app.state.metrics = metrics
    app.state.sessions = live
    return app

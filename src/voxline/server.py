"""The ASGI app: the browser page, WebSocket and telephony sessions, Prometheus metrics and a health check.

`create_app(stack, config)` takes an already-built `Stack`, so models are loaded once per process by the caller
(`voxline serve`) and every connection shares them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from importlib import resources
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from voxline import __version__
from voxline.agent.config import AgentConfig
from voxline.agent.metrics import SessionMetrics
from voxline.agent.session import Observer, Session
from voxline.agent.stack import Stack
from voxline.auth import AccessControl, AccessMiddleware, AccessPolicy, run_limited
from voxline.cost import CostMeter, PriceTable
from voxline.openai_api import openai_routes
from voxline.records import RecordStore, SessionRecorder
from voxline.transports.base import Transport
from voxline.transports.realtime import RealtimeTransport
from voxline.transports.twilio import TwilioTransport, voice_webhook
from voxline.transports.websocket import Limits, WebSocketTransport

log = logging.getLogger(__name__)


class SessionHost:
    """Runs sessions for every transport of one app, sharing the stack, the metrics and the observers; gives each
    session its own cost meter and (when enabled) a crash-safe record."""

    def __init__(self, stack: Stack, config: AgentConfig, observers: Sequence[Observer],
                 max_session_s: float | None = None) -> None:
        self.stack, self.config = stack, config
        self.max_session_s = max_session_s
        self.metrics = SessionMetrics()
        self.observers: tuple[Observer, ...] = (self.metrics, *observers)
        self.live: dict[str, Session] = {}
        self.prices = PriceTable.load(config.cost.prices or None)
        self.records = RecordStore(config.records.path or None) if config.records.enabled else None

    async def run(self, transport: Transport, session_id: str, kind: str) -> None:
        keys = self.stack.price_keys
        meter = CostMeter(self.prices, stt=keys.get("stt"), llm=keys.get("llm"), tts=keys.get("tts"))
        recorder = None
        if self.records is not None:
            recorder = SessionRecorder(self.records, session_id, meter=meter,
                                       metadata={"transport": kind, **self.stack.health()},
                                       record_audio=self.config.records.record_audio)
        session = Session(self.stack, self.config, transport,
                          observers=(*self.observers, recorder or meter), session_id=session_id)
        session.observers = (*session.observers, _CostReporter(session, meter, closes_turns=recorder is None))
        started = time.monotonic()
        self.live[session_id] = session
        self.metrics.sessions.inc()
        log.info("%s session %s started", kind, session_id)
        try:
            await run_limited(session.run(), self.max_session_s, transport, session_id)
        except Exception as exc:  # one broken session must not take the server down
            log.exception("session %s failed", session_id)
            try:
                await transport.send_event({"type": "error", "source": "session", "message": str(exc)})
            except Exception:
                log.debug("could not report the failure of session %s", session_id)
        finally:
            self.metrics.sessions.dec()
            self.live.pop(session_id, None)
            meter.finish(time.monotonic() - started)
            if recorder is not None:
                recorder.close()
            log.info("%s session %s ended (cost $%.5f)", kind, session_id, meter.session_total())


class _CostReporter:
    """Tells the caller what each turn cost, as a `cost` event after the turn's timeline."""

    def __init__(self, session: Session, meter: CostMeter, *, closes_turns: bool) -> None:
        self.session, self.meter, self.closes_turns = session, meter, closes_turns

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("type") != "timeline":
            return
        if self.closes_turns:
            self.meter.close_turn()
        turn = self.meter.turns[-1] if self.meter.turns else None
        self.session.emit({"type": "cost", "turn": event.get("turn"), "currency": "USD",
                           "turn_cost": float(turn.total) if turn else 0.0,
                           "session_cost": float(self.meter.session_total()),
                           "usage": turn.usage if turn else {}})


def create_app(stack: Stack, config: AgentConfig, *, observers: Sequence[Observer] = (),
               limits: Limits | None = None, twilio_auth_token: str | None = None,
               access: AccessPolicy | None = None) -> Starlette:
    access = access or AccessPolicy()
    control = AccessControl(access, twilio_signed=bool(twilio_auth_token))
    host = SessionHost(stack, config, observers, access.max_session_s)
    web = resources.files("voxline").joinpath("web")

    async def page(request: Request) -> Response:
        return HTMLResponse(web.joinpath("index.html").read_text())

    async def ws_session(ws: WebSocket) -> None:
        session_id = uuid.uuid4().hex[:12]
        transport = WebSocketTransport(ws, default_output_rate=config.output.sample_rate, limits=limits)
        try:
            if await transport.start(session_id):
                await host.run(transport, session_id, "websocket")
        finally:  # also after a failed or cancelled start: the transport's writer task must not outlive the socket
            await transport.close()

    async def twilio_voice(request: Request) -> Response:
        return await voice_webhook(request, twilio_auth_token, stream_path=control.stream_path(request.scope))

    async def twilio_stream(ws: WebSocket) -> None:
        transport = TwilioTransport(ws)
        try:
            if await transport.start():
                await host.run(transport, transport.call_sid or transport.stream_sid, "twilio")
        finally:
            await transport.close()

    async def realtime_session(ws: WebSocket) -> None:
        transport = RealtimeTransport(ws, model=ws.query_params.get("model", "voxline"))
        await transport.start(config.agent.system_prompt)
        try:
            await host.run(transport, transport.session_id, "realtime")
        finally:
            await transport.close()

    async def prometheus(request: Request) -> Response:
        return Response(generate_latest(host.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "version": __version__, "sessions": len(host.live),
                                "providers": stack.health(), "provider_events": stack.provider_events[-10:]}
        return JSONResponse(body)

    routes: list[BaseRoute] = [
        Route("/", page), Route("/metrics", prometheus), Route("/healthz", healthz),
        WebSocketRoute("/ws", ws_session),
        Route("/twilio/voice", twilio_voice, methods=["POST"]), WebSocketRoute("/twilio/stream", twilio_stream),
        WebSocketRoute("/v1/realtime", realtime_session),
        *openai_routes(stack),
    ]
    if web.is_dir():
        routes.append(Mount("/static", StaticFiles(directory=str(web)), name="static"))
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await stack.prepare()  # fallback phrases, synthesized in the server's own event loop
        yield
        if host.records is not None:
            host.records.close()

    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(AccessMiddleware, control=control)])
    app.state.host, app.state.access = host, control
    return app

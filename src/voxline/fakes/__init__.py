"""Local fakes of the cloud vendors voxline talks to, speaking their documented wire formats.

One Starlette app serves all four under prefixes (`/deepgram`, `/elevenlabs`, `/openai/v1`, `/anthropic`), so each
adapter's `base_url` points at its prefix. Tests drive the fakes in-process (`async with running() as fakes:`) and
script them (`fakes.openai.fail("rate_limit", retry_after=0.2)`, `fakes.deepgram.transcript = "..."`); a user runs
them with `voxline fakes serve` and scripts faults over HTTP: `POST /_fakes/<vendor>` with
`{"faults": [{"kind": "drop", "after": 2}], "connect_delay": 0.1, ...}`.

Every fake accepts exactly one API key (`FakeVendors(api_key=...)`, default "fake-key"); any other gets the
vendor's 401.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import fields
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route

from voxline.fakes import anthropic, deepgram, elevenlabs, elevenlabs_voices, openai
from voxline.fakes.anthropic import AnthropicScript
from voxline.fakes.deepgram import DeepgramScript
from voxline.fakes.elevenlabs import ElevenLabsScript
from voxline.fakes.elevenlabs_voices import VoiceCloneScript
from voxline.fakes.openai import OpenAIScript
from voxline.fakes.script import FAULT_KINDS, Fault, VendorScript

__all__ = ["FakeVendors", "Fault", "running"]

PREFIXES = {"deepgram": "/deepgram", "elevenlabs": "/elevenlabs", "openai": "/openai/v1", "anthropic": "/anthropic"}
ENV = {"deepgram": ("DEEPGRAM_BASE_URL", "DEEPGRAM_API_KEY"),
       "elevenlabs": ("ELEVENLABS_BASE_URL", "ELEVENLABS_API_KEY"),
       "openai": ("OPENAI_BASE_URL", "OPENAI_API_KEY"),
       "anthropic": ("ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY")}


class FakeVendors:
    """The four fakes and their scripts; `app()` is the ASGI app serving them all."""

    def __init__(self, api_key: str = "fake-key") -> None:
        self.api_key = api_key
        self.deepgram = DeepgramScript()
        self.elevenlabs = ElevenLabsScript()
        self.elevenlabs_voices = VoiceCloneScript()
        self.openai = OpenAIScript()
        self.anthropic = AnthropicScript()
        self.base = ""

    def scripts(self) -> dict[str, VendorScript]:
        return {"deepgram": self.deepgram, "elevenlabs": self.elevenlabs, "openai": self.openai,
                "anthropic": self.anthropic}

    def url(self, vendor: str) -> str:
        """The base_url to give `vendor`'s adapter (set once the fakes run)."""
        return self.base + PREFIXES[vendor]

    def env(self) -> dict[str, str]:
        """Environment variables pointing every adapter at these fakes."""
        out = {}
        for vendor, (url_var, key_var) in ENV.items():
            out[url_var] = self.url(vendor)
            out[key_var] = self.api_key
        return out

    def app(self) -> Starlette:
        key = self.api_key

        async def control(request: Request) -> JSONResponse:
            vendor = request.path_params["vendor"]
            script = self.scripts().get(vendor)
            if script is None:
                return JSONResponse({"error": f"unknown vendor {vendor!r}"}, status_code=404)
            if request.method == "POST":
                body = await request.json()
                names = {f.name for f in fields(script) if not f.name.startswith("_")}
                for k, v in body.items():
                    if k == "faults":
                        for f in v:
                            if f.get("kind") not in FAULT_KINDS:
                                return JSONResponse({"error": f"fault kind must be one of {FAULT_KINDS}"},
                                                    status_code=400)
                            script.faults.append(Fault(**f))
                    elif k in names and k not in ("requests", "connections"):
                        setattr(script, k, tuple(v) if k == "tool_call" and v else v)
                    else:
                        return JSONResponse({"error": f"unknown setting {k!r}"}, status_code=400)
            return JSONResponse({"faults": [f.__dict__ for f in script.faults], "requests": len(script.requests),
                                 "connections": script.connections})

        return Starlette(routes=[
            Mount(PREFIXES["deepgram"], routes=deepgram.routes(self.deepgram, key)),
            Mount(PREFIXES["elevenlabs"], routes=elevenlabs.routes(self.elevenlabs, key)
                  + elevenlabs_voices.routes(self.elevenlabs_voices, key)),
            Mount("/openai", routes=openai.routes(self.openai, key)),
            Mount(PREFIXES["anthropic"], routes=anthropic.routes(self.anthropic, key)),
            Route("/_fakes/{vendor}", control, methods=["GET", "POST"]),
        ])


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def server(fakes: FakeVendors, host: str = "127.0.0.1", port: int = 0, **config: Any) -> uvicorn.Server:
    port = port or free_port(host)
    fakes.base = f"http://{host}:{port}"
    return uvicorn.Server(uvicorn.Config(fakes.app(), host=host, port=port, log_level=config.pop("log_level",
                                         "warning"), lifespan="off", **config))


@asynccontextmanager
async def running(api_key: str = "fake-key", host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[FakeVendors]:
    """Serve the fakes on a free loopback port inside the current event loop (tests)."""
    fakes = FakeVendors(api_key)
    srv = server(fakes, host, port, log_level="critical")
    task = asyncio.create_task(srv.serve())
    while not srv.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield fakes
    finally:
        srv.should_exit = True
        await task

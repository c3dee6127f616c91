"""A fake Anthropic: streamed `POST /v1/messages` and `GET /v1/models` (key check).

Wire format as documented (docs.anthropic.com: Messages, Streaming Messages, Errors) and as anthropic-sdk-python
accumulates it (`lib/streaming/_messages.py`): SSE `event:` + `data:` pairs `message_start`, `content_block_start`
(text / tool_use), `content_block_delta` (text_delta / input_json_delta), `content_block_stop`, `message_delta`
(stop_reason, usage), `message_stop`, `ping`, and `error` in the stream. Headers `x-api-key` and
`anthropic-version` are required; error bodies are `{"type": "error", "error": {"type", "message"}}`.

Requests are checked the way the API checks them: `system` must be top-level (a "system" role in `messages` is a
400), `max_tokens` is required, and a `tool_result` must answer a `tool_use` of the previous assistant turn.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from voxline.fakes.script import Fault, VendorScript, refuse, sse_stream


@dataclass
class AnthropicScript(VendorScript):
    reply: str = "Hello! How can I help you today?"
    tool_call: tuple[str, dict[str, Any]] | None = None
    chunk_delay: float = 0.0


def _error(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status,
                        headers=headers)


def _refusal(api_key: str, request: Request, fault: Fault | None) -> JSONResponse | None:
    return refuse(
        fault, request.headers.get("x-api-key") == api_key,
        unauthorized=lambda: _error(401, "authentication_error", "invalid x-api-key"),
        invalid=(None if request.headers.get("anthropic-version")
                 else _error(400, "invalid_request_error", "anthropic-version: header is required")),
        rate_limited=lambda after: _error(429, "rate_limit_error",
                                          "Number of request tokens has exceeded your per-minute rate limit",
                                          {"retry-after": after}),
        failed=lambda status: (_error(status, "overloaded_error", "Overloaded") if status == 529
                               else _error(status, "api_error", "Internal server error")))


def _invalid(body: Any) -> str | None:
    if not isinstance(body, dict):
        return "body must be a JSON object"
    if "max_tokens" not in body:
        return "max_tokens: Field required"
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return "messages: at least one message is required"
    tool_uses: set[str] = set()
    for i, m in enumerate(messages):
        if m.get("role") not in ("user", "assistant"):
            return f"messages.{i}.role: Input should be 'user' or 'assistant'"
        content = m.get("content")
        blocks = content if isinstance(content, list) else []
        for block in blocks:
            if block.get("type") == "tool_use":
                tool_uses.add(block.get("id"))
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in tool_uses:
                return (f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` blocks: "
                        f"{block.get('tool_use_id')}")
    if messages[0].get("role") != "user":
        return "messages: first message must use the \"user\" role"
    return None


def _event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


def message_events(script: AnthropicScript, body: dict[str, Any]) -> list[str]:
    messages = body["messages"]
    last = messages[-1]
    answered = isinstance(last.get("content"), list) and any(b.get("type") == "tool_result" for b in last["content"])
    prompt = sum(len(json.dumps(m.get("content", "")).split()) for m in messages) + len(str(body.get("system", "")))
    events = [_event("message_start", {"message": {
        "id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": body.get("model"),
        "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": prompt, "output_tokens": 1}}})]
    out = 0
    if script.tool_call is not None and body.get("tools") and not answered:
        name, args = script.tool_call
        events.append(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        events.append(_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                          "text": "Let me check."}}))
        events.append(_event("content_block_stop", {"index": 0}))
        events.append(_event("ping", {}))
        events.append(_event("content_block_start", {"index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_fake1", "name": name, "input": {}}}))
        text = json.dumps(args)
        third = max(1, len(text) // 3)
        events.append(_event("content_block_delta", {"index": 1, "delta": {"type": "input_json_delta",
                                                                          "partial_json": ""}}))
        for i in range(0, len(text), third):
            events.append(_event("content_block_delta", {"index": 1, "delta": {
                "type": "input_json_delta", "partial_json": text[i:i + third]}}))
            out += 1
        events.append(_event("content_block_stop", {"index": 1}))
        stop = "tool_use"
    else:
        words = script.reply.split(" ")[: body["max_tokens"]]
        events.append(_event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}))
        events.append(_event("ping", {}))
        for i, w in enumerate(words):
            events.append(_event("content_block_delta", {"index": 0, "delta": {
                "type": "text_delta", "text": w if i == 0 else " " + w}}))
        events.append(_event("content_block_stop", {"index": 0}))
        out = len(words)
        stop = "max_tokens" if len(words) < len(script.reply.split(" ")) else "end_turn"
    events.append(_event("message_delta", {"delta": {"stop_reason": stop, "stop_sequence": None},
                                           "usage": {"output_tokens": out}}))
    events.append(_event("message_stop", {}))
    return events


def routes(script: AnthropicScript, api_key: str) -> list[Route]:
    async def messages(request: Request) -> Response:
        body, fault = await script.receive_json(request)
        refusal = _refusal(api_key, request, fault)
        if refusal is not None:
            return refusal
        problem = _invalid(body)
        if problem:
            return _error(400, "invalid_request_error", problem)
        return StreamingResponse(sse_stream(
            message_events(script, body), fault, script.chunk_delay, vendor="Anthropic",
            error=_event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}),
            malformed='event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0,\n\n'),
            media_type="text/event-stream")

    async def models(request: Request) -> Response:
        await script.on_connection(request)
        script.record(request)
        refusal = _refusal(api_key, request, script.next_fault())
        return refusal or JSONResponse({"data": [{"type": "model", "id": "claude-haiku-4-5",
                                                  "display_name": "Claude Haiku 4.5"}], "has_more": False})

    return [Route("/v1/messages", messages, methods=["POST"]), Route("/v1/models", models)]

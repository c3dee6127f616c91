"""Anthropic's Messages API, streamed, as an `LLM`.

The system prompt goes in the top-level `system` field (system messages are not allowed in `messages`); an
assistant turn's tool calls become `tool_use` blocks and tool results become `tool_result` blocks in the next user
turn (consecutive results merged into one turn, as the API requires). The SSE stream is read event by event:
`message_start` (input tokens), `content_block_start` (text or tool_use), `content_block_delta` (`text_delta`
yielded at once, `input_json_delta` accumulated), `content_block_stop` (a finished tool_use becomes
`LLMDelta(tool_call=...)`), `message_delta` (stop_reason, output tokens), `message_stop`; `ping` is ignored,
`error` raises (overloaded_error / api_error retryable), unknown events are skipped as the versioning policy asks.
A stream that ends before `message_stop` dropped mid-reply, unless the stop_reason had come: that reply is whole.
Reference: docs.anthropic.com "Streaming Messages" and "Errors"; anthropic-sdk-python
`src/anthropic/lib/streaming/_messages.py` (`accumulate_event`).
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

from voxline.agent.tools import anthropic_tools, call_parts
from voxline.errors import ProviderError
from voxline.providers.base import LLMDelta, Message, ToolCall
from voxline.providers.http import HTTPProvider, Timeouts, loads, malformed, redact, resolve_key, sse_events

DEFAULT_BASE_URL = "https://api.anthropic.com"
API_VERSION = "2023-06-01"
RETRYABLE_ERRORS = {"overloaded_error", "api_error", "rate_limit_error", "timeout_error"}


def anthropic_messages(messages: Sequence[Message]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, Messages API turns) from voxline messages."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for m in messages:
        if m.role == "system":
            system.append(m.content)
        elif m.role == "tool":
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id or "", "content": m.content,
                          **({"is_error": True} if m.content.startswith("Error:") else {})}])
        elif m.role == "assistant":
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content.strip() else []
            for c in m.tool_calls:
                cid, name, args = call_parts(c)
                blocks.append({"type": "tool_use", "id": cid, "name": name, "input": args})
            if blocks:
                add("assistant", blocks)
        elif m.content.strip():
            add("user", [{"type": "text", "text": m.content}])
    # collapse single text blocks to plain strings (smaller requests, the common case)
    for t in turns:
        if len(t["content"]) == 1 and t["content"][0]["type"] == "text":
            t["content"] = t["content"][0]["text"]
    return "\n\n".join(system), turns


class AnthropicLLM(HTTPProvider):
    """Streaming Claude replies with tool use."""

    provider = "anthropic"

    def __init__(self, *, model: str = "claude-haiku-4-5", api_key: str | None = None, base_url: str | None = None,
                 default_max_tokens: int = 1024, connect_timeout: float = 5.0, first_byte_timeout: float = 15.0,
                 name: str = "anthropic", **extra_body: Any) -> None:
        base = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
        secret = resolve_key(name, api_key, "ANTHROPIC_API_KEY", required=True)
        super().__init__(base_url=base, secret=secret, timeouts=Timeouts(connect_timeout, first_byte_timeout),
                         headers={"x-api-key": secret.reveal(), "anthropic-version": API_VERSION})
        self.name = self.provider = name
        self.model = model
        self.default_max_tokens = default_max_tokens
        self.extra_body = extra_body

    async def check(self) -> dict[str, Any]:
        data = await self.request_json("GET", "/v1/models")
        return {"models": len(data.get("data") or [])}

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None, tools: Sequence[dict[str, Any]] = ()
                     ) -> AsyncIterator[LLMDelta]:
        system, turns = anthropic_messages(messages)
        body: dict[str, Any] = {"model": self.model, "messages": turns, "stream": True,
                                "max_tokens": max_tokens or self.default_max_tokens, **self.extra_body}
        if system:
            body["system"] = system
        if temperature is not None:
            body["temperature"] = min(1.0, temperature)  # Anthropic's range is 0..1
        if tools:
            body["tools"] = anthropic_tools(tools)
        blocks: dict[int, dict[str, Any]] = {}
        input_tokens: int | None = None
        output_tokens: int | None = None
        stopped = False  # message_stop arrived, or message_delta's stop_reason did: the reply is whole
        async with self.open_stream("POST", "/v1/messages", json=body) as chunks:
            try:
                async for event in sse_events(chunks):
                    data = loads(self.name, f"{event.event} event", event.data, self._secret)
                    kind = data.get("type", event.event)
                    if kind == "ping":
                        continue
                    if kind == "error":
                        raise self._stream_error(data.get("error") or {})
                    if kind == "message_start":
                        usage = (data.get("message") or {}).get("usage") or {}
                        input_tokens = usage.get("input_tokens")
                    elif kind == "content_block_start":
                        block = data.get("content_block") or {}
                        blocks[int(data.get("index", 0))] = {"type": block.get("type"), "id": block.get("id", ""),
                                                             "name": block.get("name", ""), "json": ""}
                    elif kind == "content_block_delta":
                        delta = data.get("delta") or {}
                        if delta.get("type") == "text_delta" and delta.get("text"):
                            yield LLMDelta(text=delta["text"])
                        elif delta.get("type") == "input_json_delta":
                            block = blocks.get(int(data.get("index", 0)))
                            if block is None:
                                raise malformed(self.name, "input_json_delta for a block that never started",
                                                event.data, self._secret)
                            block["json"] += delta.get("partial_json", "")
                    elif kind == "content_block_stop":
                        block = blocks.pop(int(data.get("index", 0)), None)
                        if block and block["type"] == "tool_use":
                            yield LLMDelta(tool_call=self._tool_call(block))
                    elif kind == "message_delta":
                        output_tokens = (data.get("usage") or {}).get("output_tokens", output_tokens)
                        if (data.get("delta") or {}).get("stop_reason"):
                            stopped = True
                    elif kind == "message_stop":
                        stopped = True
                        break
            except ProviderError:
                if not stopped:
                    raise
                # Dropped after the stop_reason, before message_stop: the reply is complete, and a retry would
                # ask for a finished reply again (or repeat its tool calls).
        if not stopped:
            raise ProviderError(f"{self.name} stream ended before message_stop: the connection dropped mid-reply",
                                provider=self.name, retryable=True)
        yield LLMDelta(input_tokens=input_tokens, output_tokens=output_tokens)

    def _tool_call(self, block: dict[str, Any]) -> ToolCall:
        raw = block["json"]
        try:
            args = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise malformed(self.name, f"tool_use ({block['name']}) input JSON", raw, self._secret) from None
        if not isinstance(args, dict):
            raise malformed(self.name, "tool_use input", raw, self._secret)
        return ToolCall(block["id"], block["name"], args)

    def _stream_error(self, error: dict[str, Any]) -> ProviderError:
        kind = str(error.get("type") or "error")
        message = redact(str(error.get("message") or kind), self._secret)
        return ProviderError(f"{self.name} failed mid-stream: {message} ({kind})", provider=self.name,
                             retryable=kind in RETRYABLE_ERRORS)

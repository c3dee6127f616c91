"""OpenAI(-compatible) and Anthropic chat adapters against the local fakes: replies, tool calls, request shapes,
and every injected fault giving a clear `ProviderError` (or a retry)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from voxline.agent.tools import ToolBox, current_time
from voxline.errors import ConfigError, ProviderError
from voxline.fakes import FakeVendors, Fault
from voxline.fakes.anthropic import message_events
from voxline.fakes.openai import chat_events
from voxline.providers.anthropic import AnthropicLLM
from voxline.providers.base import LLMDelta, Message, ToolCall
from voxline.providers.openai import OpenAILLM
from voxline.resilience import EventLog, Retrying

KEY = "fake-key"
HISTORY = [Message("system", "Be brief."), Message("user", "What time is it in Paris?")]


@pytest.fixture(autouse=True)
def fresh(fakes: FakeVendors) -> None:
    for script in fakes.scripts().values():
        script.reset()
    fakes.openai.tool_call = fakes.anthropic.tool_call = None


def make(kind: str, fakes: FakeVendors, **kw: Any) -> Any:
    if kind == "openai":
        return OpenAILLM(base_url=fakes.url("openai"), api_key=kw.pop("api_key", KEY), **kw)
    return AnthropicLLM(base_url=fakes.url("anthropic"), api_key=kw.pop("api_key", KEY), **kw)


async def collect(llm: Any, messages: list[Message] = HISTORY, **kw: Any) -> list[LLMDelta]:
    return [d async for d in llm.stream(messages, **kw)]


def text(deltas: list[LLMDelta]) -> str:
    return "".join(d.text for d in deltas)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_streams_the_reply_and_usage(fakes: FakeVendors, kind: str) -> None:
    llm = make(kind, fakes)
    deltas = await collect(llm, max_tokens=50, temperature=0.2)
    assert text(deltas) == "Hello! How can I help you today?"
    assert len([d for d in deltas if d.text]) == 7  # streamed word by word, not in one piece
    usage = deltas[-1]
    assert usage.input_tokens and usage.output_tokens == 7


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_max_tokens_is_sent(fakes: FakeVendors, kind: str) -> None:
    assert text(await collect(make(kind, fakes), max_tokens=2)) == "Hello! How"


async def test_anthropic_request_shape(fakes: FakeVendors) -> None:
    """System prompt top-level, tool calls as tool_use blocks, results as tool_result blocks in a user turn."""
    history = [*HISTORY, ToolBox.assistant_message("Let me check.", []),
               Message("user", "And in Tokyo?")]
    await collect(make("anthropic", fakes), history)
    sent = fakes.anthropic.requests[-1]
    assert sent["headers"]["anthropic-version"] == "2023-06-01"
    body = sent["body"]
    assert body["system"] == "Be brief." and body["stream"] is True and body["max_tokens"] == 1024
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_tool_call_round_trip(fakes: FakeVendors, kind: str) -> None:
    script = fakes.openai if kind == "openai" else fakes.anthropic
    script.tool_call = ("current_time", {"timezone": "Europe/Paris"})
    box = ToolBox([current_time])
    llm = make(kind, fakes)
    deltas = await collect(llm, tools=box.specs())
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert len(calls) == 1 and calls[0].name == "current_time"
    assert calls[0].arguments == {"timezone": "Europe/Paris"} and calls[0].id
    tools_sent = script.requests[-1]["body"]["tools"]
    if kind == "openai":
        assert tools_sent[0]["type"] == "function" and tools_sent[0]["function"]["name"] == "current_time"
        assert tools_sent[0]["function"]["parameters"]["properties"]["timezone"]["type"] == "string"
    else:
        assert tools_sent[0]["name"] == "current_time" and "input_schema" in tools_sent[0]
    result = await box.run(calls[0])
    assert "Europe/Paris" in result.content and not result.is_error
    history = [*HISTORY, box.assistant_message(text(deltas), calls), result.message()]
    second = await collect(llm, history, tools=box.specs())
    assert text(second) == "Hello! How can I help you today?"
    body = script.requests[-1]["body"]
    if kind == "openai":
        assert body["messages"][-2]["tool_calls"][0]["function"] == {
            "name": "current_time", "arguments": json.dumps({"timezone": "Europe/Paris"})}
        assert body["messages"][-1] == {"role": "tool", "tool_call_id": calls[0].id, "content": result.content}
    else:
        assert body["messages"][-2]["content"][-1] == {"type": "tool_use", "id": calls[0].id,
                                                       "name": "current_time", "input": {"timezone": "Europe/Paris"}}
        last = body["messages"][-1]
        assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
        assert last["content"][0]["tool_use_id"] == calls[0].id


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_bad_key_is_not_retryable_and_never_shown(fakes: FakeVendors, kind: str) -> None:
    secret = "sk-live-abcdefghijklmnopqrstuvwxyz0123456789"
    llm = make(kind, fakes, api_key=secret)
    with pytest.raises(ProviderError) as info:
        await collect(llm)
    err = info.value
    assert not err.retryable and "401" in str(err)
    for shown in (str(err), repr(err), repr(llm), str(err.__cause__), str(err.__context__)):
        assert secret not in shown and secret[:12] not in shown and secret[-8:] not in shown


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_rate_limit_gives_retry_after(fakes: FakeVendors, kind: str) -> None:
    (fakes.openai if kind == "openai" else fakes.anthropic).fail("rate_limit", retry_after=7)
    with pytest.raises(ProviderError) as info:
        await collect(make(kind, fakes))
    assert info.value.retryable and info.value.retry_after == 7 and "429" in str(info.value)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_rate_limit_then_success_through_retrying(fakes: FakeVendors, kind: str) -> None:
    (fakes.openai if kind == "openai" else fakes.anthropic).fail("rate_limit", retry_after=0.05)
    events = EventLog()
    llm = Retrying(make(kind, fakes), attempts=2, observer=events)
    assert text(await collect(llm)) == "Hello! How can I help you today?"
    assert "retry" in events.kinds()


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("status", [500, 503, 529])
async def test_server_errors_are_retryable(fakes: FakeVendors, kind: str, status: int) -> None:
    (fakes.openai if kind == "openai" else fakes.anthropic).fail("server_error", status=status)
    with pytest.raises(ProviderError) as info:
        await collect(make(kind, fakes))
    assert info.value.retryable and str(status) in str(info.value)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize(("fault", "words"), [("error_mid_stream", "mid-stream"), ("drop", "dropped"),
                                              ("malformed", "malformed")])
async def test_mid_stream_failures(fakes: FakeVendors, kind: str, fault: str, words: str) -> None:
    (fakes.openai if kind == "openai" else fakes.anthropic).fail(Fault(fault, after=4))  # type: ignore[arg-type]
    got: list[str] = []
    with pytest.raises(ProviderError) as info:
        async for d in make(kind, fakes).stream(HISTORY):
            got.append(d.text)
    assert words in str(info.value) and info.value.retryable
    assert "".join(got).startswith("Hello!")  # the part before the failure did arrive


class Body(httpx.AsyncByteStream):
    """A canned streamed response body (what a server other than the fakes sends)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.data


@pytest.mark.parametrize("index", [0, None])
async def test_parallel_tool_calls_at_one_index_stay_apart(index: int | None) -> None:
    """Ollama sends every parallel call at index 0 (older versions send none): a new id starts a new call."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
        return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': finish}]})}\n\n"

    def call(cid: str, path: str) -> dict[str, Any]:
        fragment = {"id": cid, "type": "function",
                    "function": {"name": "file_write", "arguments": json.dumps({"filePath": path})}}
        return {"tool_calls": [fragment if index is None else {**fragment, "index": index}]}

    body = (chunk({"role": "assistant", "content": ""}) + chunk(call("call_a", "hello.py"))
            + chunk(call("call_b", "world.py")) + chunk({}, "tool_calls") + "data: [DONE]\n\n")
    llm = OpenAILLM(base_url="http://ollama.invalid/v1", api_key="", model="qwen3")
    llm._client = httpx.AsyncClient(base_url=llm.base_url, transport=httpx.MockTransport(
        lambda _: httpx.Response(200, stream=Body(body.encode()), headers={"content-type": "text/event-stream"})))
    deltas = await collect(llm, tools=[{"name": "file_write", "parameters": {}}])
    assert [d.tool_call for d in deltas if d.tool_call] == [ToolCall("call_a", "file_write", {"filePath": "hello.py"}),
                                                           ToolCall("call_b", "file_write", {"filePath": "world.py"})]
    await llm.aclose()


def wire_events(kind: str, fakes: FakeVendors, tool: bool) -> list[str]:
    """The events the fake will stream for HISTORY (to place a drop among them)."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1024,
                            "stream_options": {"include_usage": True}, "tools": [{}] if tool else []}
    return chat_events(fakes.openai, body) if kind == "openai" else message_events(fakes.anthropic, body)


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
@pytest.mark.parametrize("tool", [False, True])
async def test_drop_after_the_finish_reason_is_a_complete_reply(fakes: FakeVendors, kind: str, tool: bool) -> None:
    """OpenAI's finish_reason / Anthropic's message_delta stop_reason ends the reply: a drop before [DONE] or
    message_stop loses nothing, so it must not be retried (that would repeat the tool call, or ask for more)."""
    script = fakes.openai if kind == "openai" else fakes.anthropic
    script.tool_call = ("current_time", {"timezone": "Europe/Paris"}) if tool else None
    events = wire_events(kind, fakes, tool)
    last = 2 if kind == "openai" else 1  # OpenAI: the usage chunk and [DONE]; Anthropic: message_stop
    assert ("finish_reason" in events[-last - 1]) if kind == "openai" else ("stop_reason" in events[-2])
    script.fail(Fault("drop", after=len(events) - last))
    log = EventLog()
    deltas = await collect(Retrying(make(kind, fakes), attempts=3, base_delay=0, observer=log),
                           tools=ToolBox([current_time]).specs() if tool else ())
    calls = [d.tool_call for d in deltas if d.tool_call]
    assert len(calls) == (1 if tool else 0) and len(script.requests) == 1 and log.kinds() == []
    if not tool:
        assert text(deltas) == "Hello! How can I help you today?"


async def test_anthropic_drop_after_a_tool_call_is_not_retried(fakes: FakeVendors) -> None:
    """Dropped after the tool_use block but before its stop_reason: the call was given once and is not asked for
    again (the tool would run twice); the reply fails instead."""
    fakes.anthropic.tool_call = ("current_time", {"timezone": "Europe/Paris"})
    fakes.anthropic.fail(Fault("drop", after=len(wire_events("anthropic", fakes, True)) - 2))
    got: list[LLMDelta] = []
    with pytest.raises(ProviderError, match="tool call") as info:
        async for d in Retrying(make("anthropic", fakes), attempts=3, base_delay=0).stream(
                HISTORY, tools=ToolBox([current_time]).specs()):
            got.append(d)
    assert len([d for d in got if d.tool_call]) == 1 and len(fakes.anthropic.requests) == 1
    assert not info.value.retryable


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_slow_first_byte_times_out(fakes: FakeVendors, kind: str) -> None:
    (fakes.openai if kind == "openai" else fakes.anthropic).fail("slow_first_byte", delay=1)
    with pytest.raises(ProviderError) as info:
        await collect(make(kind, fakes, first_byte_timeout=0.3))
    assert "timed out" in str(info.value) and "first byte" in str(info.value) and info.value.retryable


async def test_unreachable_server_is_a_clear_retryable_error() -> None:
    llm = OpenAILLM(base_url="http://127.0.0.1:9/v1", connect_timeout=0.5)
    with pytest.raises(ProviderError) as info:
        await collect(llm)
    assert info.value.retryable and "openai" in str(info.value)


async def test_openai_compatible_server_without_key(fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local server (Ollama, vLLM) needs no key; api.openai.com does."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        OpenAILLM()
    llm = OpenAILLM(base_url=fakes.url("openai"), api_key="")
    with pytest.raises(ProviderError, match="401"):  # the fake does want its key: no header was sent
        await collect(llm)
    assert "authorization" not in fakes.openai.requests[-1]["headers"]


async def test_env_configuration(fakes: FakeVendors, monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in fakes.env().items():
        monkeypatch.setenv(k, v)
    assert text(await collect(OpenAILLM())) and text(await collect(AnthropicLLM()))


async def test_one_connection_reused_across_turns(fakes: FakeVendors) -> None:
    for kind, script in (("openai", fakes.openai), ("anthropic", fakes.anthropic)):
        llm = make(kind, fakes)
        before = script.connections
        for _ in range(4):
            await collect(llm)
        assert script.connections - before == 1
        await llm.aclose()


async def test_cancelling_mid_reply_releases_the_connection(fakes: FakeVendors) -> None:
    fakes.openai.chunk_delay = 0.05
    llm = make("openai", fakes)
    stream = llm.stream(HISTORY)
    assert (await anext(stream)).text == "Hello!"
    await stream.aclose()
    fakes.openai.chunk_delay = 0.0
    assert text(await collect(llm)) == "Hello! How can I help you today?"


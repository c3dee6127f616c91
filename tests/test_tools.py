"""Function calling: schemas from type hints and docstrings, vendor renderings, running calls (sync, async, slow,
failing, cancelled), the built-ins."""

from __future__ import annotations

import asyncio
import enum
import time
from typing import Literal

import pytest

from voxline.agent.tools import (
    EndCall,
    ToolBox,
    anthropic_tools,
    call_parts,
    current_time,
    end_call,
    openai_tools,
    parse_docstring,
    tool,
)
from voxline.errors import ConfigError
from voxline.providers.base import ToolCall


class Seating(enum.Enum):
    INSIDE = "inside"
    TERRACE = "terrace"


@tool
async def book_table(restaurant: str, people: int, time: str, seating: Seating = Seating.INSIDE,
                     notes: str | None = None, dietary: list[str] | None = None,
                     budget: Literal["low", "mid", "high"] = "mid", deposit: float = 0.0,
                     confirm: bool = True) -> dict[str, object]:
    """Book a table at a restaurant.

    Args:
        restaurant: Name of the restaurant.
        people: Number of guests,
            children included.
        time: Time of the booking, HH:MM.
        seating: Where to sit.
        notes: Anything the staff should know.
        dietary: Dietary needs of the guests.
        budget: Price range.
        deposit: Deposit to pay, in euros.
        confirm: Send a confirmation text.
    """
    return {"restaurant": restaurant, "people": people, "seating": seating.value, "dietary": dietary}


def test_schema_from_hints_and_google_docstring() -> None:
    p = book_table.parameters
    assert book_table.name == "book_table" and book_table.description == "Book a table at a restaurant."
    assert p["required"] == ["restaurant", "people", "time"] and p["additionalProperties"] is False
    props = p["properties"]
    assert props["people"] == {"type": "integer", "description": "Number of guests, children included."}
    assert props["seating"] == {"type": "string", "enum": ["inside", "terrace"], "description": "Where to sit.",
                                "default": "inside"}
    assert props["notes"] == {"type": "string", "description": "Anything the staff should know."}
    assert props["dietary"]["type"] == "array" and props["dietary"]["items"] == {"type": "string"}
    assert props["budget"]["enum"] == ["low", "mid", "high"] and props["budget"]["default"] == "mid"
    assert props["deposit"]["type"] == "number" and props["confirm"]["type"] == "boolean"


def test_numpy_docstring() -> None:
    def area(width: float, height: float = 1.0) -> float:
        """Area of a rectangle.

        Parameters
        ----------
        width : float
            Width in metres.
        height : float, optional
            Height in metres.
        """
        return width * height

    t = tool(area)
    assert t.parameters["properties"]["width"]["description"] == "Width in metres."
    assert t.parameters["properties"]["height"]["description"] == "Height in metres."
    assert t.parameters["required"] == ["width"]
    assert parse_docstring("") == ("", {})


def test_vendor_renderings_and_spec_shapes() -> None:
    box = ToolBox([book_table, current_time])
    oa = box.openai()
    assert oa[0] == {"type": "function", "function": book_table.spec()}
    an = box.anthropic()
    assert an[0] == {"name": "book_table", "description": book_table.description,
                     "input_schema": book_table.parameters}
    # every shape converts to every other
    assert anthropic_tools(oa) == an and openai_tools(an) == oa and openai_tools(box.specs()) == oa


def test_bad_declarations() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        return x

    with pytest.raises(ConfigError, match="type hint"):
        tool(untyped)

    def star(*args: int) -> None: ...

    with pytest.raises(ConfigError, match=r"\*args"):
        tool(star)

    def odd(x: complex) -> None: ...

    with pytest.raises(ConfigError, match="no JSON schema"):
        tool(odd)
    with pytest.raises(ConfigError, match="tool name"):
        tool(name="has space")(lambda: None)
    with pytest.raises(ConfigError, match="two tools"):
        ToolBox([current_time, current_time])


async def test_run_async_tool_with_enum_and_list() -> None:
    box = ToolBox([book_table])
    result = await box.run(ToolCall("c1", "book_table", {"restaurant": "Chez Léon", "people": 4.0, "time": "20:00",
                                                         "seating": "terrace", "dietary": ["vegan"]}))
    assert not result.is_error
    assert '"seating": "terrace"' in result.content and '"people": 4' in result.content
    msg = result.message()
    assert msg.role == "tool" and msg.tool_call_id == "c1" and msg.name == "book_table"


@pytest.mark.parametrize(("args", "words"), [
    ({"restaurant": "X", "people": 2}, "needs time"),
    ({"restaurant": "X", "people": "two", "time": "1"}, "must be integer"),
    ({"restaurant": "X", "people": True, "time": "1"}, "must be integer"),
    ({"restaurant": "X", "people": 2, "time": "1", "budget": "lavish"}, "must be one of"),
    ({"restaurant": "X", "people": 2, "time": "1", "colour": "red"}, "no parameter"),
])
async def test_bad_arguments_are_reported_to_the_model(args: dict[str, object], words: str) -> None:
    result = await ToolBox([book_table]).run(ToolCall("c", "book_table", args))
    assert result.is_error and words in result.content
    assert result.message().content.startswith("Error:")


async def test_unknown_tool_and_exceptions() -> None:
    @tool
    def boom() -> str:
        """Fails."""
        raise RuntimeError("disk on fire")

    box = ToolBox([boom])
    assert "unknown tool 'nope'" in (await box.run(ToolCall("c", "nope", {}))).content
    result = await box.run(ToolCall("c", "boom", {}))
    assert result.is_error and "RuntimeError: disk on fire" in result.content


async def test_sync_tools_run_in_a_thread_and_time_out() -> None:
    @tool(timeout=0.2)
    def slow(seconds: float) -> str:
        """Sleeps."""
        time.sleep(seconds)
        return "done"

    box = ToolBox([slow])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    t = asyncio.create_task(ticker())
    ok = await box.run(ToolCall("c", "slow", {"seconds": 0.1}))
    late = await box.run(ToolCall("c", "slow", {"seconds": 0.5}))
    t.cancel()
    assert ok.content == "done" and ticks >= 5  # the loop kept running while the sync tool slept
    assert late.is_error and "longer than 0.2 s" in late.content


async def test_cancellation_propagates() -> None:
    started = asyncio.Event()

    @tool
    async def wait() -> str:
        """Waits forever."""
        started.set()
        await asyncio.sleep(60)
        return "never"

    task = ToolBox([wait]).start(ToolCall("c", "wait", {}))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_builtins() -> None:
    box = ToolBox([current_time, end_call])
    paris = await box.run(ToolCall("c", "current_time", {"timezone": "Europe/Paris"}))
    assert "Europe/Paris" in paris.content and ("UTC+01" in paris.content or "UTC+02" in paris.content)
    bad = await box.run(ToolCall("c", "current_time", {"timezone": "Mars/Olympus"}))
    assert bad.is_error and "unknown time zone" in bad.content
    bye = await box.run(ToolCall("c", "end_call", {"reason": "caller said goodbye"}))
    assert bye.ends_call and not bye.is_error and "goodbye" in bye.content
    assert isinstance(end_call(), EndCall)


def test_call_parts_accepts_both_shapes() -> None:
    ours = {"id": "1", "name": "f", "arguments": {"a": 1}}
    theirs = {"id": "1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    assert call_parts(ours) == call_parts(theirs) == ("1", "f", {"a": 1})
    with pytest.raises(ConfigError, match="not JSON"):
        call_parts({"id": "1", "function": {"name": "f", "arguments": "{oops"}})
    msg = ToolBox.assistant_message("ok", [ToolCall("1", "f", {"a": 1})])
    assert msg.tool_calls == [ours]

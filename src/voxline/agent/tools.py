"""Function calling: declare a tool once as a typed Python function, offer it to any LLM, run the calls it makes.

    @tool
    async def book_table(restaurant: str, people: int, time: str, seating: Literal["inside", "terrace"] = "inside"):
        '''Book a table.

        Args:
            restaurant: Name of the restaurant.
            people: Number of guests.
            time: Time of the booking, HH:MM.
            seating: Where to sit.
        '''

    tools = ToolBox([book_table, current_time, end_call])
    async for delta in llm.stream(messages, tools=tools.specs()):   # both adapters take these specs
        if delta.tool_call:
            result = await tools.run(delta.tool_call)                  # never raises for a bad call: the model
            messages += [tools.assistant_message(text, [delta.tool_call]), result.message()]   # sees the error

The JSON schema comes from the type hints (int, float, str, bool, Literal, Enum, Optional, list[...], dict) and
the docstring's "Args:" (Google) or "Parameters" (numpy) section. `openai_tools()` / `anthropic_tools()` render
specs for each vendor; both also accept specs already in either vendor's shape.

`ToolBox.run(call)` is a coroutine the session engine can race against a timer to speak a filler while a slow tool
runs; it bounds the call by the tool's timeout, runs sync functions in a thread, and lets cancellation through.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import inspect
import json
import re
import types
import typing
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Union, get_args, get_origin
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from voxline.errors import ConfigError
from voxline.providers.base import Message, ToolCall

_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


@dataclass(frozen=True)
class Tool:
    """A callable offered to the LLM: its name, description, JSON schema of its arguments, and the function."""

    name: str
    description: str
    parameters: dict[str, Any]
    fn: Callable[..., Any]
    timeout: float | None = None

    def spec(self) -> dict[str, Any]:
        """The vendor-neutral spec: {"name", "description", "parameters"} (what `LLM.stream(tools=...)` takes)."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)


@typing.overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@typing.overload
def tool(*, name: str | None = None, description: str | None = None,
         timeout: float | None = None) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(fn: Callable[..., Any] | None = None, /, *, name: str | None = None, description: str | None = None,
         timeout: float | None = None) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator: `@tool` or `@tool(name=..., timeout=...)` turns a typed function into a `Tool`."""

    def wrap(f: Callable[..., Any]) -> Tool:
        return make_tool(f, name=name, description=description, timeout=timeout)

    return wrap(fn) if fn is not None else wrap


def make_tool(fn: Callable[..., Any], *, name: str | None = None, description: str | None = None,
              timeout: float | None = None) -> Tool:
    tool_name = name or fn.__name__
    if not _NAME.match(tool_name):
        raise ConfigError(f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-'")
    summary, arg_docs = parse_docstring(inspect.getdoc(fn) or "")
    hints = typing.get_type_hints(fn)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for param in inspect.signature(fn).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise ConfigError(f"tool {tool_name}: *args/**kwargs cannot be described to an LLM")
        if param.name not in hints:
            raise ConfigError(f"tool {tool_name}: parameter {param.name!r} needs a type hint")
        schema, optional = type_schema(hints[param.name], f"{tool_name}.{param.name}")
        if param.name in arg_docs:
            schema["description"] = arg_docs[param.name]
        if param.default is not inspect.Parameter.empty and param.default is not None:
            default = param.default.value if isinstance(param.default, enum.Enum) else param.default
            schema["default"] = default
        properties[param.name] = schema
        if param.default is inspect.Parameter.empty and not optional:
            required.append(param.name)
    parameters: dict[str, Any] = {"type": "object", "properties": properties, "required": required,
                                  "additionalProperties": False}
    return Tool(tool_name, description or summary or tool_name.replace("_", " "), parameters, fn, timeout)


def type_schema(hint: Any, where: str) -> tuple[dict[str, Any], bool]:
    """JSON schema for a type hint, and whether it admits None (an Optional parameter is not required)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return type_schema(rest[0], where)[0], len(rest) < len(args)
        return {"anyOf": [type_schema(a, where)[0] for a in rest]}, len(rest) < len(args)
    if origin is typing.Annotated:
        return type_schema(args[0], where)
    if origin is Literal:
        values = list(args)
        kinds = {type(v) for v in values}
        schema: dict[str, Any] = {"enum": values}
        if len(kinds) == 1:
            schema["type"] = _SCALARS.get(kinds.pop(), "string")
        return schema, False
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        values = [m.value for m in hint]
        kinds = {type(v) for v in values}
        return {"type": _SCALARS.get(kinds.pop(), "string") if len(kinds) == 1 else "string", "enum": values}, False
    if hint in _SCALARS:
        return {"type": _SCALARS[hint]}, False
    if origin in (list, tuple, set, frozenset, Sequence, Iterable) or hint in (list, tuple):
        item = args[0] if args else None
        schema = {"type": "array"}
        if item is not None and item is not Ellipsis:
            schema["items"] = type_schema(item, where)[0]
        return schema, False
    if origin in (dict, Mapping) or hint is dict:
        return {"type": "object"}, False
    if hint is Any:
        return {}, False
    raise ConfigError(f"tool parameter {where}: type {hint!r} has no JSON schema (use int, float, str, bool, "
                      "Literal, Enum, Optional, list or dict)")


_SCALARS: dict[Any, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}

_SECTION = re.compile(r"^(Args|Arguments|Parameters|Params|Returns?|Raises|Yields|Examples?|Notes?)\s*:?\s*$")


def parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(summary paragraph, {argument: description}) from a Google ("Args:") or numpy ("Parameters\\n---") docstring."""
    lines = doc.expandtabs().splitlines()
    summary: list[str] = []
    i = 0
    while i < len(lines) and lines[i].strip() and not _SECTION.match(lines[i].strip()):
        summary.append(lines[i].strip())
        i += 1
    args: dict[str, str] = {}
    section, numpy_style, current, base = "", False, "", 0
    for j in range(i, len(lines)):
        raw, text = lines[j], lines[j].strip()
        underline = j + 1 < len(lines) and set(lines[j + 1].strip()) == {"-"}
        head = _SECTION.match(text)
        if head and (text.endswith(":") or underline):
            section, numpy_style, current = head.group(1).lower(), underline, ""
            base = -1
            continue
        if section not in ("args", "arguments", "parameters", "params") or not text or set(text) == {"-"}:
            continue
        indent = len(raw) - len(raw.lstrip())
        if base < 0:
            base = indent
        if indent <= base:
            if numpy_style:
                current = re.split(r"\s*:", text, maxsplit=1)[0].strip().lstrip("*")
                args[current] = ""
            else:
                m = re.match(r"^\*{0,2}(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$", text)
                if m:
                    current = m.group(1)
                    args[current] = m.group(2).strip()
        elif current:
            args[current] = f"{args[current]} {text}".strip()
    return " ".join(summary), args


def _neutral(spec: Mapping[str, Any] | Tool) -> dict[str, Any]:
    """Any accepted spec shape (Tool, neutral, OpenAI, Anthropic) -> {"name", "description", "parameters"}."""
    if isinstance(spec, Tool):
        return spec.spec()
    if spec.get("type") == "function" and isinstance(spec.get("function"), Mapping):
        fn = spec["function"]
        return {"name": fn["name"], "description": fn.get("description", ""),
                "parameters": fn.get("parameters") or {"type": "object", "properties": {}}}
    if "input_schema" in spec:
        return {"name": spec["name"], "description": spec.get("description", ""), "parameters": spec["input_schema"]}
    if "name" in spec:
        return {"name": spec["name"], "description": spec.get("description", ""),
                "parameters": spec.get("parameters") or {"type": "object", "properties": {}}}
    raise ConfigError(f"not a tool spec: {dict(spec)!r}")


def openai_tools(specs: Iterable[Mapping[str, Any] | Tool]) -> list[dict[str, Any]]:
    """`tools=[{"type": "function", "function": {"name", "description", "parameters"}}]` for chat completions."""
    return [{"type": "function", "function": _neutral(s)} for s in specs]


def anthropic_tools(specs: Iterable[Mapping[str, Any] | Tool]) -> list[dict[str, Any]]:
    """`tools=[{"name", "description", "input_schema"}]` for the Messages API."""
    out = []
    for s in specs:
        n = _neutral(s)
        out.append({"name": n["name"], "description": n["description"], "input_schema": n["parameters"]})
    return out


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What a tool call gave back (or why it failed), ready to return to the LLM."""

    call: ToolCall
    content: str
    is_error: bool = False
    ends_call: bool = False
    seconds: float = 0.0

    def message(self) -> Message:
        """The `tool` message carrying this result (adapters render it as a tool / tool_result block)."""
        content = f"Error: {self.content}" if self.is_error else self.content
        return Message("tool", content, name=self.call.name, tool_call_id=self.call.id)


class EndCall:
    """Returned by a tool to ask the session to hang up after the current reply (the `end_call` built-in)."""

    def __init__(self, reason: str = "") -> None:
        self.reason = reason


class ToolBox:
    """The tools one agent offers; runs the calls the LLM makes, bounded, cancellable, errors reported back."""

    def __init__(self, tools: Iterable[Tool | Callable[..., Any]] = (), *, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, t: Tool | Callable[..., Any]) -> Tool:
        made = t if isinstance(t, Tool) else make_tool(t)
        if made.name in self._tools:
            raise ConfigError(f"two tools named {made.name!r}")
        self._tools[made.name] = made
        return made

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def specs(self) -> list[dict[str, Any]]:
        return [t.spec() for t in self._tools.values()]

    def openai(self) -> list[dict[str, Any]]:
        return openai_tools(self._tools.values())

    def anthropic(self) -> list[dict[str, Any]]:
        return anthropic_tools(self._tools.values())

    def start(self, call: ToolCall) -> asyncio.Task[ToolResult]:
        """`run(call)` as a task, for racing it against a filler-phrase timer."""
        return asyncio.create_task(self.run(call), name=f"tool:{call.name}")

    async def run(self, call: ToolCall) -> ToolResult:
        """Run one call. A bad call (unknown tool, bad arguments), an exception or a timeout becomes an error
        result for the model to read; only cancellation propagates."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        t = self._tools.get(call.name)
        if t is None:
            known = ", ".join(sorted(self._tools)) or "none"
            return ToolResult(call, f"unknown tool {call.name!r}; available: {known}", is_error=True)
        try:
            kwargs = _check_arguments(t, call.arguments)
        except ValueError as exc:
            return ToolResult(call, str(exc), is_error=True)
        timeout = t.timeout if t.timeout is not None else self.timeout
        try:
            async with asyncio.timeout(timeout):
                if inspect.iscoroutinefunction(t.fn):
                    value = await t.fn(**kwargs)
                else:
                    value = await asyncio.to_thread(functools.partial(t.fn, **kwargs))
                    if inspect.isawaitable(value):
                        value = await typing.cast(Awaitable[Any], value)
        except TimeoutError:
            return ToolResult(call, f"{call.name} took longer than {timeout:g} s and was stopped", is_error=True,
                              seconds=loop.time() - started)
        except Exception as exc:  # the model reads the failure and can tell the caller
            return ToolResult(call, f"{call.name} failed: {type(exc).__name__}: {exc}", is_error=True,
                              seconds=loop.time() - started)
        seconds = loop.time() - started
        if isinstance(value, EndCall):
            return ToolResult(call, f"ending the call{': ' + value.reason if value.reason else ''}",
                              ends_call=True, seconds=seconds)
        return ToolResult(call, _render(value), seconds=seconds)

    @staticmethod
    def assistant_message(text: str, calls: Sequence[ToolCall]) -> Message:
        """The assistant turn that asked for `calls` (to put before their results in the history)."""
        return Message("assistant", text, tool_calls=[{"id": c.id, "name": c.name, "arguments": c.arguments}
                                                      for c in calls])


def _render(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, enum.Enum):
        return str(value.value)
    try:
        return json.dumps(value, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(value)


def _check_arguments(t: Tool, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate the model's arguments against the schema; convert Enum values to members."""
    props: dict[str, Any] = t.parameters.get("properties", {})
    unknown = sorted(set(arguments) - set(props))
    if unknown:
        raise ValueError(f"{t.name} has no parameter(s) {', '.join(unknown)}; it takes {', '.join(props) or 'none'}")
    missing = [p for p in t.parameters.get("required", []) if p not in arguments]
    if missing:
        raise ValueError(f"{t.name} needs {', '.join(missing)}")
    hints = typing.get_type_hints(t.fn)
    out: dict[str, Any] = {}
    for key, value in arguments.items():
        out[key] = _coerce(value, props[key], hints.get(key), f"{t.name}.{key}")
    return out


_PY: dict[str, type | tuple[type, ...]] = {
    "integer": int, "number": (int, float), "string": str, "boolean": bool, "array": list, "object": dict}


def _coerce(value: Any, schema: Mapping[str, Any], hint: Any, where: str) -> Any:
    if value is None:
        return None
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{where} must be one of {schema['enum']}, not {value!r}")
    kind = schema.get("type")
    if kind:
        expected = _PY[kind]
        ok = isinstance(value, expected) and not (kind in ("integer", "number") and isinstance(value, bool))
        if kind == "integer" and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
        if not ok:
            raise ValueError(f"{where} must be {kind}, not {type(value).__name__} {value!r}")
    if kind == "array" and "items" in schema:
        value = [_coerce(v, schema["items"], None, f"{where}[]") for v in value]
    enum_cls = _enum_in(hint)
    if enum_cls is not None:
        value = enum_cls(value)
    return value


def _enum_in(hint: Any) -> type[enum.Enum] | None:
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint
    for arg in get_args(hint):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return arg
    return None


@tool
def current_time(timezone: str = "UTC") -> str:
    """Get the current date and time.

    Args:
        timezone: IANA time zone name, e.g. Europe/Paris or America/New_York.
    """
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {timezone!r}; use an IANA name like Europe/Paris") from None
    now = datetime.now(zone)
    return now.strftime(f"%A %d %B %Y, %H:%M ({timezone}, UTC%z)")


@tool
def end_call(reason: str = "") -> EndCall:
    """End the phone call, after saying goodbye, when the caller is done or asks to hang up.

    Args:
        reason: Why the call ends, in a few words.
    """
    return EndCall(reason)


BUILTIN_TOOLS: tuple[Tool, ...] = (current_time, end_call)


def call_parts(call: Mapping[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(id, name, arguments) of a tool call stored in `Message.tool_calls`, in voxline's shape
    `{"id", "name", "arguments"}` or OpenAI's `{"id", "type": "function", "function": {"name", "arguments"}}`."""
    fn = call.get("function")
    source = fn if isinstance(fn, Mapping) else call
    args = source.get("arguments") or {}
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except ValueError:
            raise ConfigError(f"tool call {call.get('id')!r} has arguments that are not JSON: {args[:80]!r}") from None
    return str(call.get("id", "")), str(source.get("name", "")), dict(args)

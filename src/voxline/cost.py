"""What a conversation costs: a dated price table (`prices.yaml`), a meter fed by usage events, an estimator.

Money is `decimal.Decimal` (per-character and per-token prices are tiny; floats would drift when summed over a
month). The table is plain YAML shipped with the package: edit a copy and pass it (`PriceTable.load(path)`,
`voxline cost ... --prices FILE`).

`CostMeter` is a session observer: it reads the session's `usage` events (`kind` "stt" with `audio_seconds`,
"llm" with `input_tokens`/`output_tokens`, "tts" with `characters`) and `tts_cache` events (characters served
from the cache are not billed), and prices them with the stack it was given. `close_turn()` returns the turn's
cost and starts the next; `session_total()` sums them. Local components cost nothing per use: their machine is
charged by time (`add_compute_seconds`, or `finish(duration_s)` at the end of a session).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from voxline.errors import ConfigError

MILLION = Decimal(1_000_000)
KINDS = ("stt", "llm", "tts")


def _d(value: Any, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"price {where} must be a number, got {value!r}")
    try:
        out = Decimal(str(value))
    except ArithmeticError as exc:
        raise ConfigError(f"price {where} is not a number: {value!r}") from exc
    if not out.is_finite() or out < 0:
        raise ConfigError(f"price {where} must be a non-negative number, got {value!r}")
    return out


@dataclass(frozen=True)
class PriceTable:
    """The parsed `prices.yaml`: prices per kind and key ("vendor/model", plus other ids of that model in an entry's
    `models`), local machine, workloads, stacks."""

    raw: dict[str, Any]
    source: str = "prices.yaml"

    @classmethod
    def load(cls, path: str | Path | None = None) -> PriceTable:
        try:
            if path is None:
                text = resources.files("voxline").joinpath("prices.yaml").read_text(encoding="utf-8")
                source = "built-in prices.yaml"
            else:
                text = Path(path).read_text(encoding="utf-8")
                source = str(path)
            raw = yaml.safe_load(text)
        except OSError as exc:
            raise ConfigError(f"cannot read the price table {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ConfigError(f"price table {path or 'prices.yaml'} is not valid YAML: {exc}") from exc
        if not isinstance(raw, dict) or not all(isinstance(raw.get(k), dict) for k in KINDS):
            raise ConfigError(f"price table {source} needs `stt`, `llm` and `tts` sections")
        table = cls(raw, source)
        for kind in KINDS:  # validate every number once, up front
            for key in raw[kind]:
                table.entry(kind, key)
        return table

    @property
    def as_of(self) -> str:
        return str(self.raw.get("as_of", "undated"))

    def entry(self, kind: str, key: str) -> dict[str, Any]:
        items = self.raw.get(kind, {})
        if key not in items:
            known = ", ".join(sorted(items))
            raise ConfigError(f"no {kind.upper()} price for {key!r} in {self.source}; known: {known}")
        item = items[key]
        if not isinstance(item, dict):
            raise ConfigError(f"price entry {kind}.{key} must be a mapping")
        models = item.get("models", [])
        if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
            raise ConfigError(f"price entry {kind}.{key}: `models` must be a list of model ids")
        for name, value in item.items():
            if name.endswith(("_per_min", "_per_mtok", "per_mchar")) or name in ("rtf", "latency_ms"):
                _d(value, f"{kind}.{key}.{name}")
        return item

    def key_for(self, kind: str, vendor: str, model: str) -> str | None:
        """The entry that prices `vendor`'s `model`: "vendor/model" itself, else a "vendor/..." entry listing the model
        id under `models`, else the longest "vendor/NAME" whose NAME begins the model id followed by "-" (a dated
        snapshot such as gpt-4o-mini-2024-07-18, or nova-3-general); None when the table has no price for it."""
        items = self.raw.get(kind, {})
        if f"{vendor}/{model}" in items:
            return f"{vendor}/{model}"
        listed = next((key for key, item in items.items() if key.startswith(f"{vendor}/") and isinstance(item, dict)
                       and model in item.get("models", [])), None)
        if listed is not None:
            return listed
        prefix = f"{vendor}/"
        family = [key for key in items if key.startswith(prefix) and model.startswith(key[len(prefix):] + "-")]
        return max(family, key=len, default=None)

    def is_local(self, kind: str, key: str) -> bool:
        return bool(self.entry(kind, key).get("local"))

    def price(self, kind: str, key: str, field_name: str) -> Decimal:
        item = self.entry(kind, key)
        if item.get("local"):
            return Decimal(0)
        if field_name not in item:
            raise ConfigError(f"price entry {kind}.{key} has no `{field_name}`")
        return _d(item[field_name], f"{kind}.{key}.{field_name}")

    @property
    def machine_per_hour(self) -> Decimal:
        return _d(self.raw.get("local", {}).get("per_hour", 0), "local.per_hour")

    @property
    def sessions_per_machine(self) -> int:
        n = self.raw.get("local", {}).get("concurrent_sessions", 1)
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"local.concurrent_sessions must be a positive integer, got {n!r}")
        return n


# ---- the meter ------------------------------------------------------------------------------------------------------


@dataclass
class TurnCost:
    stt: Decimal = Decimal(0)
    llm: Decimal = Decimal(0)
    tts: Decimal = Decimal(0)
    compute: Decimal = Decimal(0)
    usage: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> Decimal:
        return self.stt + self.llm + self.tts + self.compute

    def as_dict(self) -> dict[str, Any]:
        return {"stt": float(self.stt), "llm": float(self.llm), "tts": float(self.tts),
                "compute": float(self.compute), "total": float(self.total), "usage": dict(self.usage)}


class CostMeter:
    """Money per turn and per session for one stack (price keys; None: that kind is not billed)."""

    def __init__(self, prices: PriceTable | None = None, *, stt: str | None = None, llm: str | None = None,
                 tts: str | None = None, stt_mode: str = "streaming") -> None:
        if stt_mode not in ("streaming", "batch"):
            raise ConfigError(f"stt_mode must be streaming or batch, got {stt_mode!r}")
        self.prices = prices or PriceTable.load()
        self.keys = {"stt": stt, "llm": llm, "tts": tts}
        for kind, key in self.keys.items():
            if key is not None:
                self.prices.entry(kind, key)  # unknown keys fail here, not at the first event
        self._stt_rate = self.prices.price("stt", stt, f"{stt_mode}_per_min") if stt else Decimal(0)
        self._in = self.prices.price("llm", llm, "input_per_mtok") if llm else Decimal(0)
        self._out = self.prices.price("llm", llm, "output_per_mtok") if llm else Decimal(0)
        self._tts = self.prices.price("tts", tts, "per_mchar") if tts else Decimal(0)
        self.turns: list[TurnCost] = []
        self.current = TurnCost()

    def _use(self, name: str, amount: float) -> None:
        self.current.usage[name] = self.current.usage.get(name, 0) + amount

    def add_stt_seconds(self, seconds: float) -> None:
        self.current.stt += self._stt_rate * Decimal(str(max(0.0, seconds))) / 60
        self._use("stt_seconds", seconds)

    def add_llm_tokens(self, input_tokens: int = 0, output_tokens: int = 0) -> None:
        self.current.llm += (self._in * max(0, input_tokens) + self._out * max(0, output_tokens)) / MILLION
        self._use("input_tokens", input_tokens)
        self._use("output_tokens", output_tokens)

    def add_tts_characters(self, characters: int) -> None:
        """Characters sent to the TTS (negative: a credit, for characters a cache served after all)."""
        self.current.tts += self._tts * characters / MILLION
        self._use("tts_characters", characters)

    def add_compute_seconds(self, seconds: float) -> None:
        """Time the local machine spent on this session (its share: divided by the sessions it serves)."""
        share = self.prices.machine_per_hour / self.prices.sessions_per_machine
        self.current.compute += share * Decimal(str(max(0.0, seconds))) / 3600
        self._use("compute_seconds", seconds)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "usage":
            usage = event.get("kind")
            if usage == "stt":
                self.add_stt_seconds(float(event.get("audio_seconds") or 0))
            elif usage == "llm":
                self.add_llm_tokens(int(event.get("input_tokens") or 0), int(event.get("output_tokens") or 0))
            elif usage == "tts":
                self.add_tts_characters(int(event.get("characters") or 0))
        elif kind == "tts_cache" and event.get("hit"):
            self.add_tts_characters(-int(event.get("characters") or 0))

    def close_turn(self) -> TurnCost:
        turn, self.current = self.current, TurnCost()
        self.turns.append(turn)
        return turn

    def finish(self, duration_s: float | None = None) -> Decimal:
        """End of session: charge the local machine for `duration_s` if any component is local; the total."""
        if duration_s and any(k and self.prices.is_local(kind, k) for kind, k in self.keys.items()):
            self.add_compute_seconds(duration_s)
        if self.current.usage:
            self.close_turn()
        return self.session_total()

    def session_total(self) -> Decimal:
        return sum((t.total for t in self.turns), self.current.total)


# ---- estimates ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StackEstimate:
    name: str
    label: str
    hours: float
    stt: Decimal
    llm: Decimal
    tts: Decimal
    compute: Decimal
    latency_ms: float | None  # voice-to-voice for a conversation stack; None for batch work

    @property
    def total(self) -> Decimal:
        return self.stt + self.llm + self.tts + self.compute

    @property
    def per_hour(self) -> Decimal:
        return self.total / Decimal(str(self.hours)) if self.hours else Decimal(0)


def _workload(prices: PriceTable, name: str) -> dict[str, Any]:
    loads = prices.raw.get("workloads", {})
    if name not in loads:
        raise ConfigError(f"no workload {name!r} in {prices.source}")
    return dict(loads[name])


def stack_latency_ms(prices: PriceTable, stack: dict[str, Any]) -> float:
    """Assumed voice-to-voice latency: turn detection + STT final + LLM first sentence + TTS first audio."""
    total = float(prices.raw.get("turn_detection_ms", 0))
    for kind in KINDS:
        if stack.get(kind):
            total += float(prices.entry(kind, stack[kind]).get("latency_ms", 0))
    return total


def estimate_stack(prices: PriceTable, name: str, workload: str, hours: float) -> StackEstimate:
    stacks = prices.raw.get("stacks", {})
    if name not in stacks:
        raise ConfigError(f"no stack {name!r} in {prices.source}; known: {', '.join(sorted(stacks))}")
    stack = stacks[name]
    load = _workload(prices, workload)
    h = Decimal(str(hours))
    mode = load.get("stt_mode", "streaming")
    stt = llm = tts = compute = Decimal(0)
    local_rtf: list[Decimal] = []
    if stack.get("stt"):
        key = stack["stt"]
        stt = prices.price("stt", key, f"{mode}_per_min") * _d(load.get("stt_minutes", 0), "stt_minutes") * h
        if prices.is_local("stt", key):
            local_rtf.append(_d(prices.entry("stt", key).get("rtf", 1), "rtf"))
    if stack.get("llm"):
        key = stack["llm"]
        turns = _d(load.get("turns", 0), "turns") * h
        llm = turns * (prices.price("llm", key, "input_per_mtok") * _d(load.get("input_tokens_per_turn", 0), "in")
                       + prices.price("llm", key, "output_per_mtok") * _d(load.get("output_tokens_per_turn", 0),
                                                                            "out")) / MILLION
    if stack.get("tts"):
        key = stack["tts"]
        tts = prices.price("tts", key, "per_mchar") * _d(load.get("tts_characters", 0), "tts_characters") * h / MILLION
        if prices.is_local("tts", key):
            local_rtf.append(_d(prices.entry("tts", key).get("rtf", 1), "rtf"))
    any_local = any(stack.get(k) and prices.is_local(k, stack[k]) for k in KINDS)
    if any_local:
        if workload == "conversation":  # a live call holds its share of a machine for its whole length
            machine_hours = h / prices.sessions_per_machine
        else:  # batch work: the machine works for (audio hours x real-time factor)
            machine_hours = h * max(local_rtf or [Decimal(1)])
        compute = machine_hours * prices.machine_per_hour
    latency = stack_latency_ms(prices, stack) if workload == "conversation" else None
    return StackEstimate(name, str(stack.get("label", name)), hours, stt, llm, tts, compute, latency)


def estimate(prices: PriceTable, use_case: str, hours: float) -> list[StackEstimate]:
    """The candidate stacks of a use case (recommended one first, as in the table) for `hours` of that use."""
    if not hours > 0 or math.isinf(hours):
        raise ConfigError(f"hours must be a positive number, got {hours}")
    cases = prices.raw.get("use_cases", {})
    if use_case not in cases:
        raise ConfigError(f"unknown use case {use_case!r}; choose one of {', '.join(sorted(cases))}")
    case = cases[use_case]
    return [estimate_stack(prices, name, case["workload"], hours) for name in case["stacks"]]


def conversation_stacks(prices: PriceTable) -> list[str]:
    cases = prices.raw.get("use_cases", {})
    names: list[str] = []
    for case in cases.values():
        if case.get("workload") == "conversation":
            names += [n for n in case["stacks"] if n not in names]
    return names


def recommend(prices: PriceTable, latency_ms: float, budget_per_month: float,
              hours_per_month: float) -> tuple[StackEstimate | None, list[StackEstimate]]:
    """The cheapest conversation stack within the latency and the monthly budget (None if none), and all of them
    sorted by monthly cost."""
    options = sorted((estimate_stack(prices, n, "conversation", hours_per_month) for n in conversation_stacks(prices)),
                     key=lambda e: e.total)
    fitting = [e for e in options
               if e.latency_ms is not None and e.latency_ms <= latency_ms and e.total <= Decimal(str(budget_per_month))]
    return (fitting[0] if fitting else None), options


def parse_budget(text: str) -> float:
    """"500", "500/month", "$500/mo" -> 500.0 (USD per month)."""
    raw = text.strip().lower().lstrip("$").replace(" ", "")
    for suffix in ("/month", "/mo", "permonth", "/m"):
        if raw.endswith(suffix):
            raw = raw[: -len(suffix)]
            break
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"budget must look like 500 or 500/month, got {text!r}") from exc
    if not value >= 0 or math.isinf(value):
        raise ConfigError(f"budget must be a non-negative amount, got {text!r}")
    return value

"""The agent configuration: one TOML file read by both the CLI and the server.

Defaults live in `default_agent.toml` beside this module (the offline stack, a short-reply voice prompt); a user's
file overrides any subset of keys.
"""

from __future__ import annotations

import dataclasses
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from voxline.agent.turns import TurnOptions
from voxline.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentSection(_Section):
    name: str = "voxline assistant"
    system_prompt: str
    greeting: str = ""
    max_tokens: int = Field(60, ge=1, le=4096)
    temperature: float = Field(0.3, ge=0.0, le=2.0)
    max_history_turns: int = Field(10, ge=1)
    tools: list[str] = Field(default_factory=list)
    """Built-in tools the LLM may call: current_time, end_call (needs an LLM that supports function calling)."""
    draft_replies: bool = True
    """Start the LLM, and the TTS of the reply's first piece, on the words of a pause before the turn is known to be
    over (voxline.agent.draft)."""


class ProvidersSection(_Section):
    stt: str = "whisper"
    llm: str = "llama"
    tts: str = "piper"
    stt_fallback: list[str] = Field(default_factory=list)
    """Providers to switch to, in order, when the one before fails (also in the middle of a turn)."""
    llm_fallback: list[str] = Field(default_factory=list)
    tts_fallback: list[str] = Field(default_factory=list)
    voice: str = ""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-provider keyword options, e.g. [providers.options.openai] model = "gpt-4o-mini"."""


class ReliabilitySection(_Section):
    stt_final_timeout_s: float = Field(5.0, gt=0)
    """Longest wait for a final transcript after the turn ended."""
    llm_first_token_timeout_s: float = Field(5.0, gt=0)
    tts_first_audio_timeout_s: float = Field(4.0, gt=0)
    retries: int = Field(1, ge=0, le=5)
    """Extra attempts on a retryable provider error (429, 5xx, timeouts), with jittered backoff."""
    fallback_phrases: bool = True
    """Synthesize apologies at start-up and play them at once when a reply fails."""
    max_recoveries: int = Field(3, ge=0)
    """Fallback phrases played per session in a row before the agent stops apologising."""


class CacheSection(_Section):
    enabled: bool = True
    backend: Literal["disk", "redis"] = "disk"
    directory: str = ""
    """Disk cache folder; empty = the XDG cache dir (voxline/tts)."""
    max_mb: int = Field(512, ge=1)
    redis_url: str = "redis://127.0.0.1:6379/0"
    ttl_s: int = Field(7 * 24 * 3600, ge=0)
    """Lifetime of a Redis entry (0: until Redis evicts it), so a shared Redis does not fill up with old sentences."""


class RecordsSection(_Section):
    enabled: bool = True
    path: str = ""
    """SQLite file for session records; empty = the XDG data dir (voxline/sessions.db)."""
    record_audio: bool = False


class CostSection(_Section):
    prices: str = ""
    """A price table (YAML); empty = the built-in dated table (src/voxline/prices.yaml)."""


class BargeInSection(_Section):
    enabled: bool = True
    min_speech_s: float = Field(0.35, ge=0.0, le=5.0)
    min_words: int = Field(1, ge=0, le=20)
    ignore_backchannels: bool = True


class OutputSection(_Section):
    sample_rate: int = Field(24000, ge=8000, le=48000)


def turn_options(values: dict[str, Any], base: TurnOptions | None = None) -> TurnOptions:
    """`base` (the defaults) with `values` applied, each checked against the type of its default: TurnOptions is a
    plain dataclass, which would take `use_transcript = "false"` (a true string) or `silence_s = "1.0"` as given."""
    base = base or TurnOptions()
    known = {f.name for f in dataclasses.fields(TurnOptions)}
    if unknown := sorted(set(values) - known):
        raise ValueError(f"unknown key in [turn]: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    for key, value in values.items():
        default = getattr(base, key)
        if isinstance(default, bool) or isinstance(value, bool):
            ok = isinstance(value, bool) and isinstance(default, bool)
        elif isinstance(default, float):
            ok = isinstance(value, int | float)
        else:
            ok = isinstance(value, type(default))
        if not ok:
            raise ValueError(f"[turn] {key} must be a {type(default).__name__}, got {value!r}")
    changes: dict[str, Any] = {k: float(v) if isinstance(getattr(base, k), float) else v for k, v in values.items()}
    return dataclasses.replace(base, **changes)


class AgentConfig(_Section):
    agent: AgentSection
    providers: ProvidersSection = Field(default_factory=ProvidersSection)
    turn: TurnOptions = Field(default_factory=TurnOptions)
    barge_in: BargeInSection = Field(default_factory=BargeInSection)
    output: OutputSection = Field(default_factory=OutputSection)
    reliability: ReliabilitySection = Field(default_factory=ReliabilitySection)
    cache: CacheSection = Field(default_factory=CacheSection)
    records: RecordsSection = Field(default_factory=RecordsSection)
    cost: CostSection = Field(default_factory=CostSection)

    @field_validator("turn", mode="before")
    @classmethod
    def _turn_options(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("detector", "smart") not in ("energy", "silero", "smart"):
                raise ValueError(f"turn detector must be energy, silero or smart, not {value['detector']!r}")
            return turn_options(value)
        return value

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> AgentConfig:
        """Defaults, then the user's file (if any), then keyword overrides per section (e.g. turn={...})."""
        data = tomllib.loads(resources.files("voxline.agent").joinpath("default_agent.toml").read_text())
        if path is not None:
            try:
                user = tomllib.loads(Path(path).read_text())
            except FileNotFoundError:
                raise ConfigError(f"agent config {path} not found") from None
            except tomllib.TOMLDecodeError as exc:
                raise ConfigError(f"agent config {path} is not valid TOML: {exc}") from None
            _merge(data, user)
        _merge(data, overrides)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid agent config{f' {path}' if path else ''}: {exc}") from None


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value

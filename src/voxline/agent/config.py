"""The agent configuration: one TOML file read by both the CLI and the server.

Defaults live in `default_agent.toml` beside this module (the offline stack, a short-reply voice prompt); a user's
file overrides any subset of keys.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

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


class ProvidersSection(_Section):
    stt: str = "whisper"
    llm: str = "llama"
    tts: str = "piper"
    voice: str = ""
    options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """Per-provider keyword options, e.g. [providers.options.openai] model = "gpt-4o-mini"."""


class BargeInSection(_Section):
    enabled: bool = True
    min_speech_s: float = Field(0.35, ge=0.0, le=5.0)
    min_words: int = Field(1, ge=0, le=20)
    ignore_backchannels: bool = True


class OutputSection(_Section):
    sample_rate: int = Field(24000, ge=8000, le=48000)


class AgentConfig(_Section):
    agent: AgentSection
    providers: ProvidersSection = Field(default_factory=ProvidersSection)
    turn: TurnOptions = Field(default_factory=TurnOptions)
    barge_in: BargeInSection = Field(default_factory=BargeInSection)
    output: OutputSection = Field(default_factory=OutputSection)

    @field_validator("turn", mode="before")
    @classmethod
    def _turn_options(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if value.get("detector", "smart") not in ("energy", "silero", "smart"):
                raise ValueError(f"turn detector must be energy, silero or smart, not {value['detector']!r}")
            try:
                return TurnOptions(**value)
            except TypeError as exc:
                raise ValueError(f"unknown key in [turn]: {exc}") from None
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

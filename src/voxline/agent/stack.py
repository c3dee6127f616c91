"""The providers one process shares among all its sessions, built once from the agent config.

Models are loaded here, once; every `Session` borrows them. Provider modules are imported only when chosen, so a
cloud-only deployment never loads onnxruntime models it does not use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from voxline.agent.config import AgentConfig
from voxline.agent.turns import TurnDetector, TurnOptions, make_turn_detector
from voxline.errors import ConfigError
from voxline.models.store import ModelStore
from voxline.providers.base import LLM, STT, TTS, VAD, TurnModel

# provider name -> (module, class); the class takes keyword options (and `store=` for local models)
STT_PROVIDERS = {"whisper": ("voxline.providers.whisper", "WhisperSTT"),
                 "deepgram": ("voxline.providers.deepgram", "DeepgramSTT"),
                 "openai": ("voxline.providers.openai", "OpenAISTT"),
                 "scripted": ("voxline.providers.scripted", "ScriptedSTT")}
LLM_PROVIDERS = {"llama": ("voxline.providers.llama", "LlamaLLM"),
                 "openai": ("voxline.providers.openai", "OpenAILLM"),
                 "anthropic": ("voxline.providers.anthropic", "AnthropicLLM"),
                 "scripted": ("voxline.providers.scripted", "ScriptedLLM")}
TTS_PROVIDERS = {"piper": ("voxline.providers.piper", "PiperTTS"),
                 "elevenlabs": ("voxline.providers.elevenlabs", "ElevenLabsTTS"),
                 "openai": ("voxline.providers.openai", "OpenAITTS"),
                 "scripted": ("voxline.providers.scripted", "ScriptedTTS")}
LOCAL = {"whisper", "llama", "piper"}


@dataclass
class Stack:
    stt: STT
    llm: LLM
    tts: TTS
    vad: VAD | None = None
    turn_model: TurnModel | None = None

    def turn_detector(self, options: TurnOptions) -> TurnDetector:
        """A fresh detector for one session, sharing this stack's VAD and turn model."""
        return make_turn_detector(options, self.vad, self.turn_model)


def _construct(kind: str, table: dict[str, tuple[str, str]], name: str, options: dict[str, Any],
               store: ModelStore) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {kind} provider {name!r}; choose one of {', '.join(sorted(table))}")
    module, attr = table[name]
    cls: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    kwargs = dict(options)
    if name in LOCAL:
        kwargs.setdefault("store", store)
    return cls(**kwargs)


def build_stack(config: AgentConfig, store: ModelStore | None = None) -> Stack:
    """Load every provider the config names (models once per process) plus the VAD and turn model it needs."""
    store = store or ModelStore()
    p = config.providers
    opts = p.options
    stack = Stack(
        stt=_construct("STT", STT_PROVIDERS, p.stt, opts.get(p.stt, {}), store),
        llm=_construct("LLM", LLM_PROVIDERS, p.llm, opts.get(p.llm, {}), store),
        tts=_construct("TTS", TTS_PROVIDERS, p.tts, opts.get(p.tts, {}), store),
    )
    detector = config.turn.detector
    if detector in ("silero", "smart"):
        from voxline.providers.silero import SileroVAD

        stack.vad = SileroVAD(store.path("silero-vad") / "silero_vad.onnx")
    if detector == "smart":
        from voxline.providers.smart_turn import SmartTurnModel

        stack.turn_model = SmartTurnModel(store.path("smart-turn-v3") / "smart-turn-v3.2-cpu.onnx")
    return stack


def scripted_stack(*, store: ModelStore | None = None, vad: bool = True, **options: Any) -> Stack:
    """Scripted STT/LLM/TTS with fixed delays and the real Silero VAD: the shared/bench scenario, and fast tests."""
    from voxline.providers.scripted import ScriptedLLM, ScriptedSTT, ScriptedTTS

    stack = Stack(ScriptedSTT(**options.get("stt", {})), ScriptedLLM(**options.get("llm", {})),
                  ScriptedTTS(**options.get("tts", {})))
    if vad:
        from voxline.providers.silero import SileroVAD

        stack.vad = SileroVAD((store or ModelStore()).path("silero-vad") / "silero_vad.onnx")
    return stack

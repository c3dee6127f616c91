"""The providers one process shares among all its sessions, built once from the agent config.

Models are loaded here, once; every `Session` borrows them. Provider modules are imported only when chosen, so a
cloud-only deployment never loads onnxruntime models it does not use. Reliability is added from outside, the same
way for every provider: a timeout, retries, a circuit breaker and a fallback chain when fallbacks are configured,
the TTS cache, and fallback phrases synthesized at start-up (`await stack.prepare()`).
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from voxline.agent.config import AgentConfig, ReliabilitySection
from voxline.agent.tools import BUILTIN_TOOLS, ToolBox
from voxline.agent.turns import TurnDetector, TurnOptions, make_turn_detector
from voxline.cost import PriceTable
from voxline.errors import ConfigError
from voxline.models.store import ModelStore
from voxline.observe import report
from voxline.providers.base import LLM, STT, TTS, VAD, TurnModel
from voxline.providers.native_threads import configure_openmp
from voxline.resilience import CircuitBreaker, Fallback, FallbackPhrases, Retrying, with_timeout

log = logging.getLogger(__name__)

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
# local provider -> its entry of the price table (prices.yaml): nothing per use, whatever the model; the machine
# is charged by time. A cloud provider is priced by its name and the model it was built with (`price_key`).
LOCAL_PRICE_KEYS = {("stt", "whisper"): "local/whisper-base", ("llm", "llama"): "local/smollm2-135m",
                    ("tts", "piper"): "local/piper-joe"}
UNBILLED = {"scripted"}


class ProviderEvents(list[dict[str, Any]]):
    """Observer of the reliability wrappers (timeouts, retries, fallbacks, breaker changes) of all sessions: logs
    each event, keeps the latest 50 (shown at /healthz), and reports it to the session whose call caused it
    (`voxline.observe`), so the caller's events and the session record say which provider failed and what was done."""

    def __call__(self, event: dict[str, Any]) -> None:
        log.warning("provider %s: %s", event.get("provider", "?"), event.get("event"))
        self.append(event)
        del self[:-50]
        report(event)


@dataclass
class Stack:
    stt: STT
    llm: LLM
    tts: TTS
    vad: VAD | None = None
    turn_model: TurnModel | None = None
    tools: ToolBox | None = None
    """Functions the LLM may call during a reply (the config's built-ins, plus any an application adds)."""
    phrases: FallbackPhrases | None = None
    """Apologies in the agent's voice, ready to play when a reply fails (after `prepare()`)."""
    price_keys: dict[str, str | None] = field(default_factory=dict)
    """Price-table entries of the primary providers ("stt", "llm", "tts"), None when unknown (not billed)."""
    provider_events: ProviderEvents = field(default_factory=ProviderEvents)

    def turn_detector(self, options: TurnOptions) -> TurnDetector:
        """A fresh detector for one session, sharing this stack's VAD and turn model. A session may ask for a
        detector the config did not load (a Realtime client's `semantic_vad`): its model is then loaded once, here,
        and kept for every later session."""
        if options.detector in ("silero", "smart") and self.vad is None:
            from voxline.providers.silero import SileroVAD

            self.vad = SileroVAD()
        if options.detector == "smart" and self.turn_model is None:
            from voxline.providers.smart_turn import SmartTurnModel

            self.turn_model = SmartTurnModel()
        return make_turn_detector(options, self.vad, self.turn_model)

    async def prepare(self) -> None:
        """Work to do once before serving: synthesize the fallback phrases."""
        if self.phrases is not None and not self.phrases.ready:
            await self.phrases.prepare()

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for kind in ("stt", "llm", "tts"):
            provider = getattr(self, kind)
            probe = getattr(provider, "health", None)
            out[kind] = {"provider": provider.name, **({"chain": probe()} if callable(probe) else {})}
        return out


def _construct(kind: str, table: dict[str, tuple[str, str]], name: str, options: dict[str, Any],
               store: ModelStore) -> Any:
    if name not in table:
        raise ConfigError(f"unknown {kind} provider {name!r}; choose one of {', '.join(sorted(table))}")
    module, attr = table[name]
    cls: Callable[..., Any] = getattr(importlib.import_module(module), attr)
    kwargs = dict(options)
    if name in LOCAL:
        kwargs.setdefault("store", store)
    accepted = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        if unknown := sorted(set(options) - set(accepted)):
            raise ConfigError(f"[providers.options.{name}]: {kind} provider {name!r} takes no option "
                              f"{', '.join(map(repr, unknown))} (it takes: {', '.join(sorted(accepted))})")
    return cls(**kwargs)


def _resilient(kind: str, table: dict[str, tuple[str, str]], names: list[str], config: AgentConfig,
               store: ModelStore, observer: Callable[[dict[str, Any]], None]) -> tuple[Any, Any]:
    """Primary provider and fallbacks, each behind a timeout and retries; a breaker and a chain when several. Also
    the bare primary provider (what a call costs is its model's price)."""
    rel: ReliabilitySection = config.reliability
    limit = {"stt": rel.stt_final_timeout_s, "llm": rel.llm_first_token_timeout_s,
             "tts": rel.tts_first_audio_timeout_s}[kind]
    chain, bare = [], []
    for name in names:
        options = dict(config.providers.options.get(name, {}))
        if name == "llama":  # every reply starts with the system prompt: evaluate it at load, not in the first reply
            options.setdefault("warm_prompt", config.agent.system_prompt)
        provider = _construct(kind.upper(), table, name, options, store)
        bare.append(provider)
        wrapped: Any = with_timeout(provider, first_item=limit, observer=observer)
        if rel.retries and name not in LOCAL:  # a local model does not recover by being asked again
            wrapped = Retrying(wrapped, attempts=rel.retries + 1, observer=observer)
        if len(names) > 1:
            wrapped = CircuitBreaker(wrapped, observer=observer)
        chain.append(wrapped)
    return (chain[0] if len(chain) == 1 else Fallback(*chain, observer=observer)), bare[0]


def price_key(kind: str, name: str, provider: Any, prices: PriceTable) -> str | None:
    """The price-table entry of a primary provider: its vendor and actual model (`model`, or ElevenLabs' `model_id`);
    None, with a warning, when the table does not price that model (its use is then not billed)."""
    if name in UNBILLED:
        return None
    if (kind, name) in LOCAL_PRICE_KEYS:
        wanted = LOCAL_PRICE_KEYS[kind, name]
        key = wanted if wanted in prices.raw.get(kind, {}) else None
    else:
        model = str(getattr(provider, "model", None) or getattr(provider, "model_id", None) or "")
        wanted = f"{name}/{model}"
        key = prices.key_for(kind, name, model)
    if key is None:
        log.warning("no %s price for %s in %s: its use is not billed (add it to a price table, [cost] prices)",
                    kind.upper(), wanted, prices.source)
    return key


def _cached(tts: TTS, config: AgentConfig) -> TTS:
    if not config.cache.enabled:
        return tts
    from voxline.cache.tts import CachedTTS

    backend: Any
    if config.cache.backend == "redis":
        from voxline.cache.redis import RedisCache

        backend = RedisCache(config.cache.redis_url, ttl_s=config.cache.ttl_s or None)
    else:
        from voxline.cache.disk import DiskCache

        backend = DiskCache(Path(config.cache.directory) if config.cache.directory else None,
                            max_bytes=config.cache.max_mb * 1024 * 1024)
    return cast(TTS, CachedTTS(tts, backend))  # its hits reach the session's cost meter via `report`


def _tools(names: list[str]) -> ToolBox | None:
    builtins = {t.name: t for t in BUILTIN_TOOLS}
    unknown = [n for n in names if n not in builtins]
    if unknown:
        raise ConfigError(f"unknown tool(s) {', '.join(unknown)}; built-in tools: {', '.join(builtins)}")
    return ToolBox([builtins[n] for n in names]) if names else None


def build_stack(config: AgentConfig, store: ModelStore | None = None) -> Stack:
    """Load every provider the config names (models once per process) plus the VAD and turn model it needs."""
    store = store or ModelStore()
    configure_openmp()  # read when each native library loads: before the first provider is built
    p = config.providers
    prices = PriceTable.load(config.cost.prices or None)
    events = ProviderEvents()
    stt, stt_primary = _resilient("stt", STT_PROVIDERS, [p.stt, *p.stt_fallback], config, store, events)
    llm, llm_primary = _resilient("llm", LLM_PROVIDERS, [p.llm, *p.llm_fallback], config, store, events)
    tts, tts_primary = _resilient("tts", TTS_PROVIDERS, [p.tts, *p.tts_fallback], config, store, events)
    stack = Stack(stt=stt, llm=llm, tts=_cached(tts, config), provider_events=events)
    stack.tools = _tools(config.agent.tools)
    stack.price_keys = {kind: price_key(kind, name, primary, prices)
                        for kind, name, primary in (("stt", p.stt, stt_primary), ("llm", p.llm, llm_primary),
                                                    ("tts", p.tts, tts_primary))}
    if config.reliability.fallback_phrases:
        stack.phrases = FallbackPhrases(stack.tts, voice=p.voice or None, observer=events)
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

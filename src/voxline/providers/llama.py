"""Local chat LLM with llama.cpp (llama-cpp-python) on a GGUF model, SmolLM2-135M-Instruct by default.

One `LlamaLLM` holds one model and one llama context; its owner shares it between sessions. A llama context
is not thread-safe and holds one conversation's KV cache, so every use of it runs on a single worker thread
owned by the `LlamaLLM`: streams from many sessions are served one after the other, in order of arrival.
Tokens travel from that thread to the consuming task through an asyncio queue; cancelling the consumer sets a
stop flag that the worker checks after every token, so generation stops within one token (a stream still
waiting for its turn is dropped before it starts).

llama.cpp keeps the KV cache of the previous prompt and `Llama.generate` reuses its longest common prefix, so
a warm turn of the same conversation only evaluates the new tokens (system prompt and history are cached).
`prefill()` lets a session put the user's words in that cache while they are still speaking, so the reply
evaluates only the last few. When sessions interleave, each turn pays for its whole prompt again.

llama.cpp's OpenMP threads spin only briefly at each barrier, then sleep (`voxline.providers.native_threads`): on
2 cores shared with STT and TTS, long-spinning threads fight for the cores, and threads that sleep at once decode
2.5x slower. Every use of the context, the warm-up included, runs on the worker thread: a second calling thread
would give libgomp a second thread team, more threads than cores, and libgomp then stops spinning.

llama.cpp's "extra buffer types" (AMX tiles, repacked weights) are off by default: a build with AMX support
crashes with a protection fault inside some virtual machines that advertise AMX without enabling it (seen on
Firecracker guests), and they bring nothing to a 135M Q4_1 model on a laptop CPU.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import math
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from voxline.errors import ConfigError, ModelError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.providers.base import LLMDelta, Message
from voxline.providers.native_threads import configure_openmp

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct.Q4_1.gguf"
_ROLES = frozenset({"system", "user", "assistant", "tool"})
_Item = LLMDelta | BaseException | None
_TURN_OVERHEAD = 6  # tokens the chat template adds around one message (<|im_start|>role\n ... <|im_end|>\n)
PREFILL_MAX_TOKENS = 96
"""Most new tokens one prefill evaluates (~0.2 s on 2 cores); a session's interims each add a few."""
PREFILL_CHUNK = 16
"""Tokens evaluated at a time: a reply that comes meanwhile waits for one chunk at most."""
PREFILL_MAX_DISCARD = 16
"""A prefill that would throw away more cached tokens than this (another conversation's) is skipped unless the cache
has been left alone for `PREFILL_IDLE_S`: callers talking at once do not evict each other's words."""
PREFILL_IDLE_S = 2.0


class LlamaLLM:
    """A GGUF chat model served by llama.cpp; `stream()` yields text deltas, then one delta with token counts.

    `temperature` and `max_tokens` are defaults that each `stream()` call may override (temperature 0 is
    greedy); `extra_buffers` enables llama.cpp's AMX / repacked weight layouts and `spin_wait` leaves libgomp's
    own long spin in place (see the module docstring for both).
    """

    name = "llama"

    def __init__(self, model: str | Path | None = None, *, store: ModelStore | None = None,
                 n_threads: int = 2, n_ctx: int = 2048, temperature: float = 0.2, max_tokens: int = 256,
                 top_p: float = 0.9, top_k: int = 40, repeat_penalty: float = 1.1, seed: int = 1234,
                 extra_buffers: bool = False, spin_wait: bool = False, warm_prompt: str | None = None,
                 nice: int = 19) -> None:
        """`warm_prompt`: a system prompt to evaluate at load, so that the first reply reuses its KV cache instead of
        paying for it (`bench/llm.py`: first token 234-287 ms cold, 84-122 ms warm, on 2 cores). `nice`: how much lower
        than the process the generating threads run (capped at the lowest priority, 19): on shared cores, the first
        audio of a reply (Piper), its sending, and the caller's next words (VAD, Whisper) come before tokens that will
        only be spoken seconds later, and the LLM still has every cycle they leave. Piper's first audio next to a
        generating LLM: 165-198 ms median at nice 0, 150-164 ms at nice 5, alone 121-128 ms. `bench/latency.py --limit
        20`, four runs each, alternated: voice to voice 851-881 ms median at nice 19 against 960-1099 ms at nice 5 (the
        TTS stage 153-160 against 169-192 ms). That was one caller: with many callers on one process, their Whisper
        and Piper work can keep both cores busy and leave a reply's tokens next to nothing; there, a lower `nice`
        (`[providers.options.llama]`) shares the cores more evenly (not measured)."""
        if not spin_wait:
            configure_openmp()
        from llama_cpp import Llama
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if n_threads < 1:
            raise ConfigError(f"n_threads must be at least 1, got {n_threads}")
        if n_ctx < 256:
            raise ConfigError(f"n_ctx must be at least 256 tokens, got {n_ctx}")
        _check_sampling(temperature, max_tokens)
        if model is None:
            model = (store or ModelStore()).path("smollm2-135m") / DEFAULT_MODEL
        path = Path(model)
        if not path.is_file():
            raise ModelNotFoundError(f"GGUF model not found: {path}")
        try:
            with _model_params(use_extra_bufts=extra_buffers):
                self._llama = Llama(str(path), n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                                    seed=seed, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelError(f"cannot load GGUF model {path}: {exc}") from exc
        template = self._llama.metadata.get("tokenizer.chat_template")
        if not template:
            raise ModelError(f"{path.name} has no chat template in its GGUF metadata")
        eos, bos = self._llama.token_eos(), self._llama.token_bos()
        self._format = Jinja2ChatFormatter(
            template=template, eos_token=self._llama._model.token_get_text(eos) if eos >= 0 else "",
            bos_token=self._llama._model.token_get_text(bos) if bos >= 0 else "", add_generation_prompt=True)
        self.model_path = path
        self.n_ctx = self._llama.n_ctx()
        self.temperature = temperature
        self.max_tokens = max_tokens
        self._top_p, self._top_k, self._repeat_penalty = top_p, top_k, repeat_penalty
        # The single worker serializes every use of the llama context (see the module docstring).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llama", initializer=_yield_to_others,
                                          initargs=(nice,))
        self._generating = threading.Event()
        self._lock = threading.Lock()  # guards the two fields below
        self._streams_waiting = 0  # submitted to the worker, not started yet
        self._prefill_next: tuple[list[Message], int] | None = None  # newest prompt to prefill (and max_tokens)
        self._cache_used_at = -math.inf  # when a stream or prefill last changed the KV cache (worker thread only)
        self._warned_tools = False
        if warm_prompt:
            self._worker.submit(self._llama.eval, self._render([Message("system", warm_prompt)])).result()

    @property
    def generating(self) -> bool:
        """True while the worker is evaluating a stream's prompt or sampling its tokens (not during a prefill)."""
        return self._generating.is_set()

    def close(self) -> None:
        """Stop accepting streams; queued ones are dropped, a running one stops at its consumer's cancel."""
        self._worker.shutdown(wait=False, cancel_futures=True)

    # ---- prompt ------------------------------------------------------------------------------------------

    def _render(self, messages: Sequence[Message]) -> list[int]:
        chat: list[Any] = [{"role": m.role, "content": m.content} for m in messages]
        prompt = self._format(messages=chat).prompt
        return self._llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=True)

    def fit(self, messages: Sequence[Message], max_tokens: int) -> list[int]:
        """Prompt tokens for `messages`, trimmed to leave `max_tokens` of room in the context window.

        Leading system messages are always kept; the oldest turns after them are dropped (a conversation never
        restarts on an assistant or tool turn), and a last message that alone is too long keeps its end.
        """
        budget = self.n_ctx - max_tokens
        head = 0
        while head < len(messages) and messages[head].role == "system":
            head += 1
        system, turns = list(messages[:head]), list(messages[head:])
        tokens = self._render(messages)
        if len(tokens) <= budget:
            return tokens
        fixed = len(self._render(system)) if system else 0
        if fixed > budget - 16:
            raise ProviderError(f"the system prompt alone is {fixed} tokens: it does not fit a context "
                                f"window of {self.n_ctx} tokens with {max_tokens} for the reply",
                                provider=self.name)
        # Keep the newest turns whose estimated size fits, then check on the real rendering.
        keep = 0
        used = fixed
        for message in reversed(turns):
            size = len(self._llama.tokenize(message.content.encode("utf-8"), add_bos=False)) + _TURN_OVERHEAD
            if used + size > budget:
                break
            used += size
            keep += 1
        kept = turns[len(turns) - keep:] if keep else []
        while kept and kept[0].role != "user" and len(kept) > 1:
            kept = kept[1:]
        while kept:
            tokens = self._render(system + kept)
            if len(tokens) <= budget:
                return tokens
            kept = kept[1:]
        # Even the last message alone is too long: keep its end.
        last = turns[-1]
        room = budget - len(self._render([*system, Message(last.role, "")]))
        body = self._llama.tokenize(last.content.encode("utf-8"), add_bos=False, special=False)
        tail = self._llama.detokenize(body[-max(room, 1):]).decode("utf-8", errors="ignore")
        return self._render([*system, Message(last.role, tail)])[-budget:]

    # ---- prefill -----------------------------------------------------------------------------------------

    def prefill(self, messages: Sequence[Message], *, max_tokens: int | None = None) -> None:
        """Evaluate `messages` into the KV cache when the worker gets to it; returns at once.

        A session passes the conversation with the user's words so far, on each interim transcript: the reply to
        the finished turn then evaluates only what differs, the last words (`bench/llm.py`, spoken turns). Give the
        `max_tokens` the reply will ask for, so both trim a long conversation alike. Only the newest prompt is kept.
        It is evaluated `PREFILL_CHUNK` tokens at a time and given up as soon as a stream waits for the worker; it
        is skipped beyond `PREFILL_MAX_TOKENS` new tokens, and when it would evict another conversation still in
        use (`PREFILL_MAX_DISCARD`).
        """
        try:
            _check_messages(messages, self.name)
        except ProviderError:
            return
        with self._lock:
            queued = self._prefill_next is not None
            self._prefill_next = (list(messages), self.max_tokens if max_tokens is None else max_tokens)
        if not queued:
            try:
                self._worker.submit(self._prefill)
            except RuntimeError:  # closed
                pass

    def _stream_waiting(self) -> bool:
        with self._lock:
            return self._streams_waiting > 0

    def _prefill(self) -> None:
        """Worker-thread body of `prefill()`."""
        with self._lock:
            job, self._prefill_next = self._prefill_next, None
        if job is None or self._stream_waiting():
            return
        messages, max_tokens = job
        llama = self._llama
        try:
            prompt = self.fit(messages, max_tokens)
            cached = 0
            for a, b in zip(llama.input_ids[: llama.n_tokens], prompt, strict=False):
                if a != b:
                    break
                cached += 1
            discarded = llama.n_tokens - cached
            if (cached == len(prompt) or len(prompt) - cached > PREFILL_MAX_TOKENS
                    or (discarded > PREFILL_MAX_DISCARD and time.monotonic() - self._cache_used_at < PREFILL_IDLE_S)):
                return
            llama.n_tokens = cached  # eval() drops the KV cache from here on
            for start in range(cached, len(prompt), PREFILL_CHUNK):
                llama.eval(prompt[start:start + PREFILL_CHUNK])
                self._cache_used_at = time.monotonic()
                if self._stream_waiting():
                    break  # the reply takes over from the prefix evaluated so far
        except Exception as exc:  # a hint that failed changes nothing: the reply evaluates its prompt itself
            log.debug("%s: prefill failed: %s", self.name, exc)

    # ---- streaming ---------------------------------------------------------------------------------------

    def _generate(self, messages: Sequence[Message], max_tokens: int, temperature: float,
                  stop: threading.Event, put: Callable[[_Item], None]) -> None:
        """Worker-thread body: evaluate the prompt, then sample until an end token, max_tokens or `stop`."""
        import llama_cpp

        if stop.is_set():  # cancelled while waiting for its turn
            return
        self._generating.set()
        generator = None
        try:
            prompt = self.fit(messages, max_tokens)
            max_tokens = min(max_tokens, self.n_ctx - len(prompt))
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            vocab = self._llama._model.vocab
            produced = 0
            generator = self._llama.generate(prompt, temp=temperature, top_p=self._top_p, top_k=self._top_k,
                                             repeat_penalty=self._repeat_penalty, reset=True)
            for token in generator:
                if stop.is_set() or llama_cpp.llama_vocab_is_eog(vocab, token):
                    break
                produced += 1
                if text := decoder.decode(self._llama.detokenize([token])):
                    put(LLMDelta(text=text))
                if produced >= max_tokens:
                    break
            if not stop.is_set():
                if rest := decoder.decode(b"", final=True):
                    put(LLMDelta(text=rest))
                put(LLMDelta(input_tokens=len(prompt), output_tokens=produced))
        except ProviderError as exc:
            put(exc)
        except Exception as exc:
            put(ProviderError(f"llama.cpp failed: {exc}", provider=self.name))
        finally:
            if generator is not None:
                generator.close()
            self._generating.clear()
            self._cache_used_at = time.monotonic()

    async def stream(self, messages: Sequence[Message], *, max_tokens: int | None = None,
                     temperature: float | None = None,
                     tools: Sequence[dict[str, Any]] = ()) -> AsyncGenerator[LLMDelta, None]:
        """Stream the reply to `messages`. Small local models do not call tools: `tools` is ignored."""
        max_tokens = self.max_tokens if max_tokens is None else max_tokens
        temperature = self.temperature if temperature is None else temperature
        _check_sampling(temperature, max_tokens)
        _check_messages(messages, self.name)
        if tools and not self._warned_tools:
            self._warned_tools = True
            log.warning("%s: local GGUF models do not call tools; tool definitions ignored", self.name)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[_Item] = asyncio.Queue()
        stop = threading.Event()

        def put(item: _Item) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone: nobody is listening any more
                stop.set()

        def work() -> None:
            with self._lock:
                self._streams_waiting -= 1
            try:
                self._generate(list(messages), max_tokens, temperature, stop, put)
            finally:
                put(None)

        with self._lock:
            self._streams_waiting += 1
        try:
            future = self._worker.submit(work)
        except RuntimeError as exc:
            with self._lock:
                self._streams_waiting -= 1
            raise ProviderError("this LlamaLLM has been closed", provider=self.name) from exc

        def dropped(done: Any) -> None:  # close() cancelled it before it started: tell the consumer
            if done.cancelled() and not stop.is_set():
                put(ProviderError("this LlamaLLM was closed before the reply started", provider=self.name))

        future.add_done_callback(dropped)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            if future.cancel():  # never started: no longer waiting
                with self._lock:
                    self._streams_waiting -= 1


def _yield_to_others(nice: int) -> None:
    """Lower the worker thread's scheduling priority; llama.cpp's OpenMP threads, started from it, inherit it."""
    if nice > 0 and hasattr(os, "setpriority"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(),
                           min(os.getpriority(os.PRIO_PROCESS, 0) + nice, 19))
        except OSError as exc:
            log.debug("cannot lower the llama thread's priority: %s", exc)


_PARAMS_LOCK = threading.Lock()


@contextmanager
def _model_params(**overrides: Any) -> Iterator[None]:
    """Let `Llama()` load a model with `llama_model_params` fields it has no argument for.

    `Llama.__init__` takes its model parameters from `llama_model_default_params()`; that function is replaced
    for the duration of one construction (under a lock) by one that applies `overrides`.
    """
    import llama_cpp.llama_cpp as native

    with _PARAMS_LOCK:
        original = native.llama_model_default_params

        def patched() -> Any:
            params = original()
            for key, value in overrides.items():
                setattr(params, key, value)
            return params

        native.llama_model_default_params = patched
        try:
            yield
        finally:
            native.llama_model_default_params = original


def _check_sampling(temperature: float, max_tokens: int) -> None:
    if not 0 <= temperature <= 2:
        raise ConfigError(f"temperature must be in [0, 2], got {temperature}")
    if max_tokens < 1:
        raise ConfigError(f"max_tokens must be at least 1, got {max_tokens}")


def _check_messages(messages: Sequence[Message], provider: str) -> None:
    if not messages:
        raise ProviderError("no messages to answer", provider=provider)
    for m in messages:
        if m.role not in _ROLES or not isinstance(m.content, str):
            raise ProviderError(f"bad message: role {m.role!r} with {type(m.content).__name__} content",
                                provider=provider)

"""LlamaLLM with the real SmolLM2-135M: answers, limits, cancellation, context trimming, shared use."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voxline.errors import ConfigError, ModelError, ModelNotFoundError, ProviderError
from voxline.models.store import ModelStore
from voxline.providers.base import LLM, LLMDelta, Message
from voxline.providers.llama import PREFILL_CHUNK, PREFILL_MAX_TOKENS, LlamaLLM
from voxline.providers.native_threads import SPIN_COUNT, configure_openmp

SYSTEM = Message("system", "You are a helpful voice assistant. Answer in one short sentence.")


@pytest.fixture(scope="module")
def llm(model_store: ModelStore) -> Iterator[LlamaLLM]:
    model = LlamaLLM(store=model_store, n_threads=2)
    yield model
    model.close()


async def reply(llm: LlamaLLM, question: str, **kw: Any) -> tuple[str, LLMDelta]:
    text, last = "", LLMDelta()
    async for delta in llm.stream([SYSTEM, Message("user", question)], **kw):
        text += delta.text
        last = delta
    return text, last


async def wait_idle(llm: LlamaLLM, limit_s: float) -> float:
    start = time.perf_counter()
    while llm.generating:
        assert time.perf_counter() - start < limit_s, "generation went on after the consumer was cancelled"
        await asyncio.sleep(0.002)
    return time.perf_counter() - start


def test_is_an_llm(llm: LlamaLLM) -> None:
    assert isinstance(llm, LLM)
    assert llm.n_ctx >= 2048


async def test_knows_the_capital_of_france(llm: LlamaLLM) -> None:
    text, usage = await reply(llm, "What is the capital of France?", temperature=0.0)
    assert "paris" in text.lower()
    assert usage.text == "" and usage.input_tokens and usage.input_tokens > 10
    assert usage.output_tokens is not None and 1 <= usage.output_tokens <= 64


async def test_streams_token_by_token(llm: LlamaLLM) -> None:
    question = Message("user", "Write a long essay about the moon.")
    deltas = [d async for d in llm.stream([SYSTEM, question], max_tokens=30, temperature=0.0)]
    texts = [d for d in deltas if d.text]
    usage = deltas[-1]
    assert usage.text == "" and usage.output_tokens is not None and 10 <= usage.output_tokens <= 30
    assert len(texts) >= 0.8 * usage.output_tokens  # one piece per token, not one block at the end


async def test_max_tokens_is_respected(llm: LlamaLLM) -> None:
    _, usage = await reply(llm, "Write a long story about a dragon and a knight.", max_tokens=5)
    assert usage.output_tokens is not None and usage.output_tokens <= 5


async def test_temperature_zero_is_repeatable(llm: LlamaLLM) -> None:
    a, _ = await reply(llm, "Name three colours.", temperature=0.0, max_tokens=20)
    b, _ = await reply(llm, "Name three colours.", temperature=0.0, max_tokens=20)
    assert a == b and a.strip()


async def test_cancelling_stops_generation_within_a_token(llm: LlamaLLM) -> None:
    got = 0
    three = asyncio.Event()

    async def listen() -> None:
        nonlocal got
        async for delta in llm.stream([SYSTEM, Message("user", "Write a very long essay about the sea.")],
                                      max_tokens=500, temperature=0.7):
            got += bool(delta.text)
            if got >= 3:
                three.set()

    task = asyncio.create_task(listen())
    await asyncio.wait_for(three.wait(), 10)
    assert llm.generating
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # one token of a 135M model takes ~10 ms on 2 idle cores; the limit allows for a machine shared with others
    await wait_idle(llm, limit_s=1.0)
    # and the model serves the next caller at once
    text, _ = await reply(llm, "What is the capital of France?", temperature=0.0)
    assert "paris" in text.lower()


async def test_context_is_trimmed_keeping_the_system_prompt(model_store: ModelStore) -> None:
    small = LlamaLLM(store=model_store, n_ctx=256)
    try:
        history = [SYSTEM]
        for i in range(30):
            history += [Message("user", f"Question number {i}: tell me something about the number {i}."),
                        Message("assistant", f"The number {i} is a fine number, one of my favourites.")]
        history.append(Message("user", "What is the capital of France?"))
        tokens = small.fit(history, max_tokens=48)
        assert len(tokens) <= 256 - 48
        prompt = small._llama.detokenize(tokens, special=True).decode()
        assert prompt.startswith("<|im_start|>system\n" + SYSTEM.content)
        assert "What is the capital of France?" in prompt
        assert "Question number 0:" not in prompt and "Question number 29:" in prompt
        # the kept history starts on a user turn
        assert prompt.index("<|im_start|>user") < prompt.index("<|im_start|>assistant")
        text = "".join([d.text async for d in small.stream(history, max_tokens=48, temperature=0.0)])
        assert "paris" in text.lower()
        # a single message longer than the window keeps its end
        tokens = small.fit([SYSTEM, Message("user", "blah " * 2000 + "What is the capital of France?")], 48)
        assert len(tokens) <= 256 - 48
        assert "capital of France?" in small._llama.detokenize(tokens, special=True).decode()
        with pytest.raises(ProviderError, match="system prompt"):
            small.fit([Message("system", "rule " * 400), Message("user", "hi")], 48)
    finally:
        small.close()


async def test_two_sessions_stream_at_once(llm: LlamaLLM) -> None:
    questions = ["What is the capital of France?", "What is the capital of Germany?"]
    alone = [await reply(llm, q, temperature=0.0) for q in questions]
    together = await asyncio.gather(*(reply(llm, q, temperature=0.0) for q in questions))
    for (solo_text, solo_usage), (text, usage) in zip(alone, together, strict=True):
        assert text == solo_text
        assert usage.output_tokens == solo_usage.output_tokens
    assert "paris" in together[0][0].lower() and "berlin" in together[1][0].lower()


async def test_warm_turn_reuses_the_cached_prompt(llm: LlamaLLM) -> None:
    conversation = [SYSTEM, Message("user", "Hello! " + "I would like some help planning my day. " * 10)]
    text = "".join([d.text async for d in llm.stream(conversation, max_tokens=8, temperature=0.0)])
    conversation += [Message("assistant", text), Message("user", "Thanks.")]

    async def first_token(messages: list[Message]) -> float:
        start = time.perf_counter()
        stream = llm.stream(messages, max_tokens=1, temperature=0.0)
        async for _ in stream:
            break
        await stream.aclose()
        await wait_idle(llm, 2)
        return time.perf_counter() - start

    warm = await first_token(conversation)
    await first_token([Message("system", "Unrelated."), Message("user", "Hi.")])  # evict the cache
    cold = await first_token(conversation)
    assert warm < cold, f"warm {warm * 1000:.0f} ms vs cold {cold * 1000:.0f} ms"


async def test_a_warm_prompt_is_in_the_cache_before_the_first_reply(model_store: ModelStore) -> None:
    model = LlamaLLM(store=model_store, warm_prompt=SYSTEM.content)
    try:
        cached = model._llama.n_tokens
        assert cached == len(model._render([SYSTEM]))
        text, _ = await reply(model, "Say hello.", max_tokens=4, temperature=0.0)
        assert text.strip()
    finally:
        model.close()


def _cached(llm: LlamaLLM) -> list[int]:
    return [int(t) for t in llm._llama.input_ids[: llm._llama.n_tokens]]


async def _worker_done(llm: LlamaLLM) -> None:
    """Wait until the worker has run everything submitted so far."""
    await asyncio.wrap_future(llm._worker.submit(lambda: None))


def _hold_worker(llm: LlamaLLM) -> threading.Event:
    """Keep the worker busy until the returned event is set, so that what is submitted meanwhile queues."""
    release, started = threading.Event(), threading.Event()

    def hold() -> None:
        started.set()
        release.wait(10)

    llm._worker.submit(hold)
    assert started.wait(10)
    return release


async def test_a_prefill_reads_the_words_so_far_and_changes_no_reply(llm: LlamaLLM) -> None:
    question = "Could you tell me which planet in our solar system is the largest one?"
    head, full = [SYSTEM, Message("user", question.rsplit(" ", 4)[0])], [SYSTEM, Message("user", question)]
    await reply(llm, "Hi.", max_tokens=2, temperature=0.0)
    alone = "".join([d.text async for d in llm.stream(full, max_tokens=12, temperature=0.0)])
    for prefilled in (head, full):  # the words so far; all of them (the last interim had the final's words)
        await reply(llm, "Hi.", max_tokens=2, temperature=0.0)
        llm.prefill(prefilled)
        await _worker_done(llm)
        assert _cached(llm) == llm._render(prefilled)
        assert "".join([d.text async for d in llm.stream(full, max_tokens=12, temperature=0.0)]) == alone


def _spy_fit(llm: LlamaLLM, monkeypatch: pytest.MonkeyPatch) -> list[list[Message]]:
    """The messages of every prefill or stream that got as far as building its prompt."""
    asked: list[list[Message]] = []
    fit = llm.fit

    def spy(messages: Any, max_tokens: int) -> list[int]:
        asked.append(list(messages))
        return fit(messages, max_tokens)

    monkeypatch.setattr(llm, "fit", spy)
    return asked


async def test_only_the_newest_prefill_runs_and_none_ahead_of_a_waiting_reply(
        llm: LlamaLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    await reply(llm, "Hi.", max_tokens=2, temperature=0.0)  # a cache the prefills may replace
    asked = _spy_fit(llm, monkeypatch)
    older, newer = ([SYSTEM, Message("user", text)] for text in ("What is the", "What is the time"))
    release = _hold_worker(llm)
    llm.prefill(older)
    llm.prefill(newer)
    release.set()
    await _worker_done(llm)
    assert asked == [newer] and _cached(llm) == llm._render(newer)

    asked.clear()
    release = _hold_worker(llm)
    llm.prefill(older)
    answer = asyncio.create_task(reply(llm, "Hello there.", max_tokens=2, temperature=0.0))
    await asyncio.sleep(0.05)  # the reply is queued behind the prefill
    release.set()
    await answer
    assert asked == [[SYSTEM, Message("user", "Hello there.")]]  # no prefill ahead of it


async def test_a_prefill_stops_between_chunks_when_a_reply_comes(llm: LlamaLLM,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    await reply(llm, "Hi.", max_tokens=2, temperature=0.0)
    words = [SYSTEM, Message("user", "I would like some help planning my day, please, and tomorrow too.")]
    prompt = llm._render(words)
    cached = next(i for i, (a, b) in enumerate(zip(_cached(llm), prompt, strict=False)) if a != b)
    assert len(prompt) - cached > PREFILL_CHUNK
    evaluate = llm._llama.eval

    def reply_arrives(tokens: Any) -> None:
        evaluate(tokens)
        llm._streams_waiting += 1  # as stream() does when a reply is submitted

    monkeypatch.setattr(llm._llama, "eval", reply_arrives)
    llm.prefill(words)
    await _worker_done(llm)
    llm._streams_waiting -= 1
    assert _cached(llm) == prompt[: cached + PREFILL_CHUNK]  # one chunk, then the reply's turn


async def test_a_reply_given_up_while_queued_leaves_prefills_on(llm: LlamaLLM) -> None:
    release = _hold_worker(llm)
    answer = asyncio.create_task(reply(llm, "Hello there.", max_tokens=2, temperature=0.0))
    await asyncio.sleep(0.05)
    assert llm._streams_waiting == 1
    answer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await answer
    release.set()
    await _worker_done(llm)
    assert llm._streams_waiting == 0


async def test_a_reply_queued_when_the_model_is_closed_fails_clearly(model_store: ModelStore) -> None:
    model = LlamaLLM(store=model_store)
    release = _hold_worker(model)
    answer = asyncio.create_task(reply(model, "Hello there.", max_tokens=2, temperature=0.0))
    await asyncio.sleep(0.05)
    model.close()
    release.set()
    with pytest.raises(ProviderError, match="closed before the reply started"):
        await asyncio.wait_for(answer, 5)


async def test_a_prefill_too_long_or_evicting_another_conversation_is_skipped(
        llm: LlamaLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    await reply(llm, "Hi.", max_tokens=2, temperature=0.0)
    before = _cached(llm)
    long = [SYSTEM, Message("user", "I would like some help planning my day, please. " * 12)]
    assert len(llm._render(long)) - len(llm._render([SYSTEM])) > PREFILL_MAX_TOKENS
    llm.prefill(long)
    await _worker_done(llm)
    assert _cached(llm) == before

    # Another caller's conversation was in use a moment ago: its cache is kept, unless left alone a while.
    await reply(llm, "Please remind me to water the plants on the balcony every morning.", max_tokens=4,
                temperature=0.0)
    in_use = _cached(llm)
    other = [SYSTEM, Message("user", "What time is it?")]
    llm.prefill(other)
    await _worker_done(llm)
    assert _cached(llm) == in_use
    monkeypatch.setattr("voxline.providers.llama.PREFILL_IDLE_S", 0.0)
    llm.prefill(other)
    await _worker_done(llm)
    assert _cached(llm) == llm._render(other)


def _nice(tid: int) -> int:
    return int(Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[16])


async def test_generation_runs_below_the_process_priority(llm: LlamaLLM) -> None:
    """The worker and the OpenMP threads it starts yield the cores to TTS and STT (see `nice`)."""
    await reply(llm, "Say hello.", max_tokens=4, temperature=0.0)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    if base >= 19:
        pytest.skip("the process already runs at the lowest priority")
    worker = next(t for t in threading.enumerate() if t.name.startswith("llama"))
    lowered_to = min(base + 19, 19)
    assert worker.native_id is not None and _nice(worker.native_id) == lowered_to
    lowered = [int(tid) for tid in os.listdir("/proc/self/task") if _nice(int(tid)) == lowered_to]
    assert len(lowered) >= 2, "llama.cpp's OpenMP helper did not inherit the worker's priority"
    assert _nice(threading.get_native_id()) == base


def test_openmp_settings_leave_the_users_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "42")
    configure_openmp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and os.environ["GOMP_SPINCOUNT"] == "42"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    configure_openmp()
    assert os.environ["GOMP_SPINCOUNT"] == str(SPIN_COUNT)


async def test_bad_input_is_refused_clearly(llm: LlamaLLM, tmp_path: Path) -> None:
    with pytest.raises(ProviderError, match="no messages"):
        [d async for d in llm.stream([])]
    with pytest.raises(ConfigError, match="temperature"):
        [d async for d in llm.stream([Message("user", "hi")], temperature=5)]
    with pytest.raises(ConfigError, match="max_tokens"):
        [d async for d in llm.stream([Message("user", "hi")], max_tokens=0)]
    with pytest.raises(ModelNotFoundError):
        LlamaLLM(tmp_path / "missing.gguf")
    garbage = tmp_path / "garbage.gguf"
    garbage.write_bytes(b"GGUF" + b"\x00" * 64)
    with pytest.raises(ModelError, match=r"garbage\.gguf"):
        LlamaLLM(garbage)
    with pytest.raises(ConfigError, match="n_threads"):
        LlamaLLM(n_threads=0)

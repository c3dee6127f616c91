"""Cost: price table, meter arithmetic (exact, in Decimal), the estimate table and the recommendation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from click.testing import CliRunner

from voxline.cli import main
from voxline.cost import CostMeter, PriceTable, estimate, parse_budget, recommend
from voxline.errors import ConfigError


@pytest.fixture(scope="module")
def prices() -> PriceTable:
    return PriceTable.load()


def test_price_table_defaults(prices: PriceTable) -> None:
    assert prices.as_of == "2026-11-25"
    assert prices.price("stt", "deepgram/nova-3", "batch_per_min") == Decimal("0.0043")
    assert prices.price("stt", "deepgram/nova-3", "streaming_per_min") == Decimal("0.0077")
    assert prices.price("stt", "openai/whisper-1", "batch_per_min") == Decimal("0.006")
    assert prices.price("llm", "openai/gpt-4o-mini", "input_per_mtok") == Decimal("0.15")
    assert prices.price("llm", "openai/gpt-4o", "output_per_mtok") == Decimal("10")
    assert prices.price("llm", "anthropic/claude-3-5-haiku", "output_per_mtok") == Decimal("4")
    assert prices.price("tts", "openai/tts-1", "per_mchar") == Decimal("15")
    assert prices.price("tts", "openai/tts-1-hd", "per_mchar") == Decimal("30")
    assert prices.price("tts", "local/piper-joe", "per_mchar") == 0 and prices.is_local("tts", "local/piper-joe")
    with pytest.raises(ConfigError, match="known:"):
        prices.entry("tts", "nope/nothing")


def test_meter_arithmetic(prices: PriceTable) -> None:
    meter = CostMeter(prices, stt="deepgram/nova-3", llm="openai/gpt-4o-mini", tts="openai/tts-1")
    meter({"type": "usage", "kind": "stt", "audio_seconds": 30})
    meter({"type": "usage", "kind": "llm", "input_tokens": 1000, "output_tokens": 200})
    meter({"type": "usage", "kind": "tts", "characters": 120})
    meter({"type": "tts_cache", "hit": True, "characters": 20})  # served from the cache: not billed
    meter({"type": "transcript", "final": True, "text": "ignored"})
    turn = meter.close_turn()
    assert turn.stt == Decimal("0.0077") / 2
    assert turn.llm == (Decimal("0.15") * 1000 + Decimal("0.60") * 200) / 1_000_000
    assert turn.tts == Decimal(15) * 100 / 1_000_000
    assert turn.total == Decimal("0.00385") + Decimal("0.00027") + Decimal("0.0015")
    assert turn.usage == {"stt_seconds": 30, "input_tokens": 1000, "output_tokens": 200, "tts_characters": 100}
    meter.add_llm_tokens(1_000_000, 0)
    meter.close_turn()
    assert meter.session_total() == Decimal("0.00562") + Decimal("0.15")
    assert len(meter.turns) == 2


def test_meter_local_machine_time(prices: PriceTable) -> None:
    meter = CostMeter(prices, stt="local/whisper-base", llm="local/smollm2-135m", tts="local/piper-joe")
    meter({"type": "usage", "kind": "tts", "characters": 5000})
    assert meter.current.total == 0
    total = meter.finish(duration_s=1800)  # half an hour on a $0.0416/h machine serving one session
    assert total == Decimal("0.0208")
    with pytest.raises(ConfigError):
        CostMeter(prices, stt="deepgram/nova-3", stt_mode="psychic")


def test_estimate_table(prices: PriceTable) -> None:
    rows = {r.name: r for r in estimate(prices, "agent-quality", 10)}
    first = estimate(prices, "agent-quality", 10)[0]
    assert first.name == "dg-4o-eleven"  # the seed's choice comes first
    q = rows["dg-4o-eleven"]
    assert q.stt == Decimal("0.0077") * 60 * 10
    assert q.llm == 180 * 10 * (Decimal("2.50") * 1200 + Decimal("10") * 60) / 1_000_000
    assert q.tts == Decimal(50) * 16200 * 10 / 1_000_000
    assert q.latency_ms is not None and q.per_hour == q.total / 10
    pod = estimate(prices, "podcast-transcription", 10)
    assert pod[0].stt == Decimal("0.0043") * 600 and pod[1].stt == Decimal("0.006") * 600
    assert pod[2].compute == Decimal("0.0416") * 10 * Decimal("0.1") and pod[2].latency_ms is None
    assert estimate(prices, "batch-tts", 1)[0].tts == Decimal(15) * 54000 / 1_000_000
    assert estimate(prices, "premium-tts", 1)[0].name == "eleven-ml"
    budget = {r.name: r for r in estimate(prices, "agent-budget", 100)}
    assert budget["local"].total == Decimal("4.16") and budget["local"].total < budget["dg-mini-openai"].total
    with pytest.raises(ConfigError, match="unknown use case"):
        estimate(prices, "karaoke", 1)
    with pytest.raises(ConfigError):
        estimate(prices, "batch-tts", 0)


def test_recommend(prices: PriceTable) -> None:
    best, options = recommend(prices, 800, 500, 200)
    assert best is not None and best.name == "local" and best.latency_ms is not None and best.latency_ms <= 800
    assert [o.total for o in options] == sorted(o.total for o in options)
    best, _ = recommend(prices, 1350, 500, 200)  # cloud stacks fit too now, but local stays the cheapest
    assert best is not None and best.name == "local"
    best, _ = recommend(prices, 100, 500, 200)
    assert best is None
    assert parse_budget("500/month") == parse_budget("$500") == parse_budget("500/mo") == 500.0
    with pytest.raises(ConfigError):
        parse_budget("lots")


def test_edited_price_table(tmp_path: Path, prices: PriceTable) -> None:
    import yaml

    raw = dict(prices.raw)
    raw["local"] = {**raw["local"], "per_hour": 100.0}  # an absurdly dear machine: the cloud wins
    path = tmp_path / "prices.yaml"
    path.write_text(yaml.safe_dump(raw))
    best, _ = recommend(PriceTable.load(path), 2000, 500, 200)
    assert best is not None and best.name == "dg-mini-openai"
    (tmp_path / "bad.yaml").write_text("stt: {a: {batch_per_min: -1}}\nllm: {}\ntts: {}\n")
    with pytest.raises(ConfigError, match="non-negative"):
        PriceTable.load(tmp_path / "bad.yaml")


def test_cli() -> None:
    runner = CliRunner()
    out = runner.invoke(main, ["cost", "estimate", "--hours", "10", "--use-case", "agent-budget"])
    assert out.exit_code == 0, out.output
    assert "local: whisper-base + SmolLM2 + Piper" in out.output and "gpt-4o-mini" in out.output
    out = runner.invoke(main, ["cost", "estimate", "--hours", "10", "--use-case", "podcast-transcription"])
    assert out.exit_code == 0 and "$2.58" in out.output and "$3.60" in out.output
    out = runner.invoke(main, ["cost", "recommend", "--latency-ms", "800", "--budget", "500/month",
                               "--hours-per-month", "200"])
    assert out.exit_code == 0 and "Recommended: local" in out.output
    out = runner.invoke(main, ["cost", "recommend", "--latency-ms", "50", "--budget", "5",
                               "--hours-per-month", "200"])
    assert out.exit_code == 1 and "no stack meets" in out.output


# ---- what a served stack is billed ----------------------------------------------------------------------------------


@pytest.fixture
def cloud_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    for env in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ELEVENLABS_API_KEY", "DEEPGRAM_API_KEY"):
        monkeypatch.setenv(env, "test-key")


def _price_keys(**providers: object) -> dict[str, str | None]:
    from voxline.agent.config import AgentConfig
    from voxline.agent.stack import build_stack

    config = AgentConfig.load(providers=providers, turn={"detector": "energy"}, cache={"enabled": False},
                              reliability={"fallback_phrases": False})
    return build_stack(config).price_keys


def test_price_keys_follow_the_configured_model(cloud_keys: None, caplog: pytest.LogCaptureFixture) -> None:
    keys = _price_keys(stt="deepgram", llm="openai", tts="elevenlabs",
                       options={"openai": {"model": "gpt-4o"}, "elevenlabs": {"model_id": "eleven_multilingual_v2"}})
    assert keys == {"stt": "deepgram/nova-3", "llm": "openai/gpt-4o", "tts": "elevenlabs/multilingual-v2"}
    defaults = _price_keys(stt="openai", llm="anthropic", tts="openai")  # the providers' own default models
    assert defaults == {"stt": "openai/gpt-4o-mini-transcribe", "llm": "anthropic/claude-haiku-4-5",
                        "tts": "openai/gpt-4o-mini-tts"}
    assert _price_keys(stt="scripted", llm="anthropic", tts="elevenlabs",
                       options={"anthropic": {"model": "claude-3-5-haiku-20241022"}}) == {
        "stt": None, "llm": "anthropic/claude-3-5-haiku", "tts": "elevenlabs/flash-v2.5"}
    with caplog.at_level("WARNING", logger="voxline.agent.stack"):
        unpriced = _price_keys(stt="scripted", llm="anthropic", tts="scripted",
                               options={"anthropic": {"model": "claude-nonexistent-9"}})
    assert unpriced == {"stt": None, "llm": None, "tts": None}
    warnings = [r.getMessage() for r in caplog.records if "price" in r.getMessage()]
    assert len(warnings) == 1 and "anthropic/claude-nonexistent-9" in warnings[0]
    prices = PriceTable.load()
    meter = CostMeter(prices, **keys)
    meter({"type": "usage", "kind": "llm", "input_tokens": 1_000_000, "output_tokens": 0})
    assert meter.current.llm == Decimal("2.5")  # gpt-4o, not gpt-4o-mini
    # dated snapshots and variants are priced as their family: the longest name that begins the id
    assert prices.key_for("llm", "openai", "gpt-4o-mini-2024-07-18") == "openai/gpt-4o-mini"
    assert prices.key_for("llm", "openai", "gpt-4o-2024-08-06") == "openai/gpt-4o"
    assert prices.key_for("stt", "deepgram", "nova-3-general") == "deepgram/nova-3"
    assert prices.key_for("llm", "openai", "gpt-4omni") is None  # a name, not a prefix of a word


async def test_a_sentence_the_tts_cache_serves_is_not_billed(tmp_path: Path) -> None:
    import asyncio

    from voxline.agent.config import AgentConfig
    from voxline.agent.session import Session
    from voxline.agent.stack import scripted_stack
    from voxline.cache import CachedTTS, DiskCache
    from voxline.transports.base import ClientEvent
    from voxline.transports.memory import MemoryTransport

    stack = scripted_stack(vad=False)
    stack.tts = CachedTTS(stack.tts, DiskCache(tmp_path))
    meter = CostMeter(PriceTable.load(), tts="openai/tts-1")
    transport = MemoryTransport()
    session = Session(stack, AgentConfig.load(turn={"detector": "energy"}), transport, observers=(meter,))
    async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
        tg.create_task(session.run())
        for question in ("what time is it", "what time is it now"):  # the same reply twice
            transport.events.clear()
            await transport.push(ClientEvent("text", {"text": question}))
            await transport.wait_for("agent_done", 10)
            await asyncio.sleep(0.1)  # the first reply's sentences are written to the cache
        transport.hangup()
    sentences = ["It is ten past four.", "Anything else?"]
    assert session.conversation.messages[-1].content == " ".join(sentences)
    assert [e["result"] for e in transport.events if e["type"] == "tts_cache"] == ["hit", "hit"]
    spoken = sum(map(len, sentences))  # billed once: the second reply's characters are credited back
    assert meter.current.usage["tts_characters"] == spoken
    assert meter.current.tts == Decimal(15) * spoken / 1_000_000

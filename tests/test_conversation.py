"""Whole conversations over the WebSocket on real recorded speech: the transcript, the spoken reply, the timeline,
and barge-in truncation. The same tests run on the offline stack (Whisper, SmolLM2, Piper) and on the cloud stack
(Deepgram, OpenAI, ElevenLabs adapters) talking to the local vendor fakes; both use Silero + Smart Turn."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import websockets

from caller import Caller
from serving import serving
from voxline.agent.config import AgentConfig
from voxline.agent.stack import build_stack
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.fakes import running
from voxline.models.store import ModelStore
from voxline.server import create_app

CLOUD_REPLY = ("Paris grew from a small settlement on an island in the Seine into the capital of France. "
               "Over the centuries it became a centre of learning, art and politics, and today millions visit it.")


@pytest.fixture(scope="module", params=["local", "cloud"])
async def url(request: pytest.FixtureRequest, model_store: ModelStore) -> AsyncIterator[str]:
    if request.param == "local":
        config = AgentConfig.load()
        async with serving(create_app(build_stack(config, model_store), config)) as base:
            yield base.replace("http", "ws") + "/ws"
        return
    async with running() as fakes:
        fakes.deepgram.transcript = "go forward ten meters"
        fakes.openai.reply = CLOUD_REPLY
        options = {vendor: {"base_url": fakes.url(vendor), "api_key": fakes.api_key}
                   for vendor in ("deepgram", "openai", "elevenlabs")}
        config = AgentConfig.load(providers={"stt": "deepgram", "llm": "openai", "tts": "elevenlabs",
                                             "options": options}, cache={"enabled": False})
        stack = build_stack(config, model_store)
        assert (stack.stt.name, stack.llm.name, stack.tts.name) == ("deepgram", "openai", "elevenlabs")
        async with serving(create_app(stack, config)) as base:
            yield base.replace("http", "ws") + "/ws"


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def speech(speech_dir: Path, name: str) -> AudioFrame:
    return read_audio(speech_dir / name).to_mono().resample(16000)


async def test_spoken_question_gets_a_spoken_answer(url: str, speech_dir: Path) -> None:
    async with websockets.connect(url) as ws:
        caller = Caller(ws)
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
        listener = asyncio.create_task(caller.listen())
        question = speech(speech_dir, "gold/goforward.flac")
        await caller.say(AudioFrame.concat([question, AudioFrame.silence(2.5, 16000)]), speed=2.0)
        timeline = await caller.wait_for("timeline", within_s=60)
        listener.cancel()
    final = next(e["text"] for e in caller.events if e["type"] == "transcript" and e["final"])
    assert words(final) == ["go", "forward", "ten", "meters"] or words(final) == ["go", "forward", "10", "meters"] \
        or {"go", "forward", "meters"} <= set(words(final)), final
    done = next(e for e in caller.events if e["type"] == "agent_done")
    assert words(done["text"]) and not done["interrupted"]
    reply = AudioFrame.from_pcm(bytes(caller.audio), 24000)
    assert reply.duration > 0.5 and reply.rms() > 0.01
    for stage in ("turn_decided", "final_transcript", "llm_first_token", "tts_first_audio", "first_audio_sent"):
        assert stage in timeline["stages_ms"], stage


async def test_barge_in_truncates_to_the_words_played(url: str, speech_dir: Path) -> None:
    async with websockets.connect(url) as ws:
        caller = Caller(ws)
        await ws.send(json.dumps({"type": "session.start", "sample_rate": 16000}))
        listener = asyncio.create_task(caller.listen())
        await ws.send(json.dumps({"type": "text", "text": "Tell me about the history of the city of Paris."}))
        # Interrupt once the reply's second piece has gone to the TTS and 1.5 s of audio has played: `planned` then
        # holds both pieces, and the barge-in (~1 s later: 0.35 s of speech, then an interim with a word) comes before
        # both have played out. Waiting for the audio alone once let a slow CPU play the 7-word first piece to its
        # end before the second began, leaving nothing to truncate.
        await caller.wait_for("agent_text", count=2, within_s=60)
        while len(caller.audio) < 24000 * 2 * 1.5:
            caller.arrived.clear()
            await asyncio.wait_for(caller.arrived.wait(), 30)
        interruption = speech(speech_dir, "gold/LJ002-0020.flac").slice(0, 3.0)
        await caller.say(AudioFrame.concat([interruption, AudioFrame.silence(2.0, 16000)]))
        interrupted = await caller.wait_for("interrupted", within_s=30)
        await caller.wait_for("transcript", within_s=30)
        await caller.wait_for("agent_done", count=2, within_s=60)
        listener.cancel()
    heard, planned = interrupted["heard"], interrupted["planned"]
    assert heard and words(planned)[: len(words(heard))] == words(heard)
    assert len(words(heard)) < len(words(planned))
    assert {"type": "clear"} in caller.events
    # The first reply's agent_done reports exactly the heard words: that is what the context keeps.
    first_done = next(e for e in caller.events if e["type"] == "agent_done")
    assert first_done["interrupted"] and first_done["text"] == heard

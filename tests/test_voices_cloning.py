"""ElevenLabs Instant Voice Cloning against its fake (success, 401, 422, refused samples, cleanup), XTTS config."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from voxline.errors import ConfigError, ModelError, ProviderError
from voxline.fakes.elevenlabs_voices import VoiceCloneScript, app
from voxline.voices.cloning import ElevenLabsVoices, XTTSConfig, clone_elevenlabs
from voxline.voices.library import VoiceLibrary
from voxline.voices.presets import PRESETS, elevenlabs_kwargs, piper_kwargs, preset_for
from voxline.voices.validation import SampleSetError

KEY = "fake-key"
BASE = "http://fake/elevenlabs"


@pytest.fixture
def script() -> VoiceCloneScript:
    return VoiceCloneScript()


def client(script: VoiceCloneScript, key: str = KEY) -> ElevenLabsVoices:
    return ElevenLabsVoices(api_key=key, base_url=BASE, transport=httpx.ASGITransport(app(script, KEY)))


@pytest.fixture
def samples(speech_dir: Path) -> list[Path]:
    return sorted((speech_dir / "multi").glob("1998-*.flac"))[:3]


async def test_clone_flow_lands_in_the_library(tmp_path: Path, script: VoiceCloneScript, samples: list[Path]) -> None:
    library = VoiceLibrary(tmp_path / "voices")
    async with client(script) as voices:
        profile, report = await clone_elevenlabs(library, "reader", samples, voices=voices, description="calm",
                                                 labels={"accent": "american", "gender": "female"})
        assert report.usable
        listed = await voices.list()
    assert [v["voice_id"] for v in listed] == [profile.voice]
    remote = script.voices[profile.voice]
    assert remote["name"] == "reader" and remote["labels"] == {"accent": "american", "gender": "female"}
    assert [s["file_name"] for s in remote["samples"]] == [p.name for p in samples]
    assert remote["samples"][0]["duration_secs"] == pytest.approx(13.315, abs=0.01)
    assert script.requests[0]["fields"] == ["description", "files", "labels", "name", "remove_background_noise"]
    stored = library.get("reader")
    assert (stored.engine, stored.voice, stored.description) == ("elevenlabs", profile.voice, "calm")
    assert len(stored.samples) == 3 and all(p.is_file() for p in library.sample_paths(stored))
    async with client(script) as voices:
        await voices.delete(profile.voice)
        assert await voices.list() == []
        with pytest.raises(ProviderError, match="voice_not_found"):
            await voices.delete(profile.voice)


async def test_bad_key_is_401_with_the_vendor_message(script: VoiceCloneScript, samples: list[Path]) -> None:
    async with client(script, key="wrong-key") as voices:
        with pytest.raises(ProviderError) as err:
            await voices.add("x", samples[:1])
    assert "HTTP 401" in str(err.value) and "Invalid API key (invalid_api_key)" in str(err.value)
    assert not err.value.retryable and "wrong-key" not in str(err.value)
    assert script.voices == {}


async def test_422_validation_errors(script: VoiceCloneScript, samples: list[Path]) -> None:
    async with client(script) as voices:
        with pytest.raises(ProviderError, match=r"HTTP 422\): name: field required") as err:
            await voices.add("", samples[:1])
        assert not err.value.retryable
        # the raw vendor body, as sent: no files part
        raw = await voices._client.post("/v1/voices/add", data={"name": "x"})
        assert raw.status_code == 422
        assert raw.json() == {"detail": [{"loc": ["body", "files"], "msg": "field required",
                                          "type": "value_error.missing"}]}


async def test_rate_limit_and_garbage_audio(script: VoiceCloneScript, samples: list[Path], tmp_path: Path) -> None:
    script.fail("rate_limit", retry_after=3)
    garbage = tmp_path / "notes.wav"
    garbage.write_bytes(b"RIFF....garbage")
    async with client(script) as voices:
        with pytest.raises(ProviderError) as err:
            await voices.list()
        assert err.value.retryable and err.value.retry_after == 3
        with pytest.raises(ProviderError, match="invalid_audio"):
            await voices.add("x", [garbage])


async def test_refused_samples_upload_nothing(tmp_path: Path, script: VoiceCloneScript, speech_dir: Path) -> None:
    library = VoiceLibrary(tmp_path / "voices")
    short = [speech_dir / "multi" / "367-130732-0000.flac"]  # 2.4 s
    async with client(script) as voices:
        with pytest.raises(SampleSetError, match="at least 10 s needed") as err:
            await clone_elevenlabs(library, "tiny", short, voices=voices)
    assert not err.value.report.usable
    assert script.requests == [] and library.list() == []


async def test_library_failure_deletes_the_remote_voice(tmp_path: Path, script: VoiceCloneScript,
                                                        samples: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    library = VoiceLibrary(tmp_path / "voices")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError("No space left on device")

    monkeypatch.setattr(library, "add", full)
    async with client(script) as voices:
        with pytest.raises(OSError, match="No space"):
            await clone_elevenlabs(library, "reader", samples, voices=voices)
    assert len(script.requests) == 1 and script.voices == {}  # created, then deleted again


def test_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ELEVENLABS_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="ELEVENLABS_API_KEY"):
        ElevenLabsVoices()


def test_xtts_config_says_what_is_missing(tmp_path: Path) -> None:
    problems = XTTSConfig(tmp_path / "nowhere").problems()
    assert any("does not exist" in p for p in problems)
    (tmp_path / "xtts").mkdir()
    (tmp_path / "xtts" / "config.json").write_text(json.dumps({}))
    problems = XTTSConfig(tmp_path / "xtts").problems()
    assert any("model.pth is missing" in p for p in problems) and any("vocab.json" in p for p in problems)
    with pytest.raises(ModelError, match="never downloads XTTS weights"):
        XTTSConfig(tmp_path / "xtts").check()


def test_presets_cover_every_engine() -> None:
    for preset in PRESETS:
        assert set(piper_kwargs(preset)) == {"noise_scale", "noise_w_scale", "length_scale"}
        assert elevenlabs_kwargs(preset)["model_id"].startswith("eleven_")
        assert preset_for("matched", preset)["method"] in ("dio", "harvest")
    assert elevenlabs_kwargs("ultra_fast")["model_id"] == "eleven_flash_v2_5"
    assert preset_for("elevenlabs", "ultra_fast")["optimize_streaming_latency"] == 4
    with pytest.raises(ConfigError, match="unknown quality preset"):
        preset_for("piper", "ludicrous")

"""Sample validation on real recordings (one speaker passes, two speakers fail) and synthetic bad samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voxline.audio.codecs import read_audio, write_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError
from voxline.voices.similarity import SpeakerEncoder
from voxline.voices.validation import SampleSetError, validate_samples


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def _files(speech_dir: Path, speaker: str, n: int, start: int = 0) -> list[Path]:
    return sorted((speech_dir / "multi").glob(f"{speaker}-*.flac"))[start:start + n]


def _statuses(report: object) -> dict[str, str]:
    out: dict[str, str] = {}
    for c in report.checks:  # type: ignore[attr-defined]
        if c.status == "fail" or out.get(c.name) != "fail":
            out[c.name] = c.status
    return out


def test_one_real_speaker_passes(speech_dir: Path, encoder: SpeakerEncoder) -> None:
    report = validate_samples(_files(speech_dir, "367", 6), encoder)
    assert report.usable, report.reasons
    assert "one_speaker" not in _statuses(report)
    scores = [f.speaker_score for f in report.files]
    assert all(s is not None and s >= 0.75 for s in scores), scores  # dev set: >= 0.77, threshold 0.72
    # 16 kHz LibriSpeech and ~60 s in all: warnings, not refusals
    assert _statuses(report)["sample_rate"] == "warn"
    json.dumps(report.to_dict())


def test_two_real_speakers_fail(speech_dir: Path, encoder: SpeakerEncoder) -> None:
    mixed = _files(speech_dir, "367", 3) + _files(speech_dir, "1998", 3)
    report = validate_samples(mixed, encoder)
    assert not report.usable
    assert _statuses(report)["one_speaker"] == "fail"
    assert report.min_pair_similarity is not None and report.min_pair_similarity < 0.66
    # one intruder among several files of one speaker is named
    intruder = _files(speech_dir, "2414", 1)[0]
    report = validate_samples([*_files(speech_dir, "367", 4), intruder], encoder)
    failed = [c.file for c in report.checks if c.name == "one_speaker"]
    assert failed == [str(intruder)]
    with pytest.raises(SampleSetError, match="another speaker"):
        report.raise_if_unusable()


@pytest.fixture(scope="module")
def bad_samples(tmp_path_factory: pytest.TempPathFactory, speech_dir: Path) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("bad-samples")
    x = read_audio(speech_dir / "multi" / "367-130732-0005.flac").mono_float32()
    rng = np.random.default_rng(1)
    power = float(np.mean(x ** 2))
    made = {
        "clean": x,
        "clipped": np.clip(x * 12, -1, 1),
        "silent": np.zeros(16000 * 15, np.float32),
        "noisy": x + rng.normal(0, np.sqrt(power / 10 ** (-5 / 10)), x.size).astype(np.float32),
        "short": x[: 16000 * 4],
    }
    paths = {}
    for name, y in made.items():
        paths[name] = out / f"{name}.wav"
        write_audio(AudioFrame.from_float(np.clip(y, -1, 1).astype(np.float32), 16000), paths[name])
    return paths


def test_synthetic_faults(bad_samples: dict[str, Path]) -> None:
    clean = validate_samples([bad_samples["clean"]])
    assert clean.usable and set(_statuses(clean)) == {"sample_rate", "duration"}  # 16 kHz, 15 s: warnings

    clipped = validate_samples([bad_samples["clipped"]])
    assert _statuses(clipped)["clipping"] == "fail" and clipped.files[0].clipping > 0.01

    silent = validate_samples([bad_samples["silent"]])
    assert _statuses(silent)["silence"] == "fail" and silent.files[0].silence_ratio == 1.0

    noisy = validate_samples([bad_samples["noisy"]])
    assert _statuses(noisy)["snr"] == "fail", noisy.files[0].snr_db
    assert clean.files[0].snr_db > 25 > 8 > noisy.files[0].snr_db

    short = validate_samples([bad_samples["short"]])
    assert _statuses(short)["duration"] == "fail"
    assert any("at least 10 s" in r for r in short.reasons)


def test_unreadable_and_empty(bad_dir: Path, bad_samples: dict[str, Path]) -> None:
    broken = sorted(bad_dir.glob("*.wav"))[0]
    report = validate_samples([broken, bad_samples["clean"]])
    assert _statuses(report)["readable"] == "fail" and "cannot be read" in report.reasons[0]
    with pytest.raises(AudioError, match="no samples"):
        validate_samples([])


def test_validate_cli(speech_dir: Path, bad_samples: dict[str, Path]) -> None:
    from voxline.cli.voices import voices

    files = [str(p) for p in _files(speech_dir, "367", 2, start=2)]
    result = CliRunner().invoke(voices, ["validate", "--json", *files])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["usable"] and len(data["files"]) == 2 and data["files"][0]["speaker_score"] > 0.7
    result = CliRunner().invoke(voices, ["validate", "--no-speaker-check", str(bad_samples["silent"])])
    assert result.exit_code == 1
    assert "refused" in result.output and "silence" in result.output

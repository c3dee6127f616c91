"""Speaker similarity with the GE2E encoder on real recordings: same speaker vs different speakers separate."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError
from voxline.voices.similarity import DEFAULT_THRESHOLD, SpeakerEncoder, equal_error_rate

SPEAKERS = ("1998", "2414", "2609", "3331", "367")


@pytest.fixture(scope="module")
def encoder() -> SpeakerEncoder:
    return SpeakerEncoder()


def test_same_and_different_speakers_separate(speech_dir: Path, encoder: SpeakerEncoder) -> None:
    emb = {s: [encoder.embed(speech_dir / "multi" / f"{s}-{u}.flac") for u in (sorted(
        p.stem.split("-", 1)[1] for p in (speech_dir / "multi").glob(f"{s}-*.flac"))[:2])] for s in SPEAKERS}
    same = [float(emb[s][0] @ emb[s][1]) for s in SPEAKERS]
    different = [float(emb[a][0] @ emb[b][0]) for a, b in itertools.combinations(SPEAKERS, 2)]
    # Measured on these files: same >= 0.79, different <= 0.63, threshold 0.73 (the dev-set EER point).
    assert min(same) >= DEFAULT_THRESHOLD + 0.03, same
    assert max(different) <= DEFAULT_THRESHOLD - 0.05, different
    eer, _ = equal_error_rate(np.array(same), np.array(different))
    assert eer == 0.0


def test_compare_verdicts(speech_dir: Path, encoder: SpeakerEncoder) -> None:
    a, b = sorted((speech_dir / "multi").glob("1998-*.flac"))[:2]
    other = sorted((speech_dir / "multi").glob("2414-*.flac"))[0]
    same = encoder.compare(a, b)
    assert same.same_speaker and same.describe().startswith(f"{same.score:.3f} same speaker (threshold 0.73)")
    assert not encoder.compare(a, other).same_speaker


def test_too_little_speech_is_refused(encoder: SpeakerEncoder) -> None:
    with pytest.raises(AudioError, match="too little speech"):
        encoder.embed(AudioFrame.silence(3.0, 16000))


def test_equal_error_rate_math() -> None:
    eer, threshold = equal_error_rate(np.array([0.9, 0.8, 0.6]), np.array([0.1, 0.7, 0.2]))
    assert eer == pytest.approx(1 / 3) and 0.6 <= threshold <= 0.8
    with pytest.raises(ValueError):
        equal_error_rate(np.array([]), np.array([0.1]))


def test_compare_cli(speech_dir: Path) -> None:
    from voxline.cli.voices import voices

    a, b = sorted((speech_dir / "multi").glob("3331-*.flac"))[:2]
    result = CliRunner().invoke(voices, ["compare", str(a), str(b)])
    assert result.exit_code == 0, result.output
    score, verdict = result.output.split(" ", 1)
    assert 0.73 <= float(score) <= 1.0 and verdict.startswith("same speaker (threshold 0.73)")

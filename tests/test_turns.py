"""Turn detectors: the pure state machines on synthetic probabilities, then the real detectors on real speech."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from voxline.agent.turns import (
    Endpointer,
    EnergyTurnDetector,
    SileroTurnDetector,
    SmartEndpointer,
    SmartTurnDetector,
    TurnDetector,
    TurnEvent,
    TurnOptions,
    make_turn_detector,
    transcript_signal,
)
from voxline.audio.codecs import read_audio
from voxline.audio.frame import AudioFrame
from voxline.errors import ConfigError

W = 0.032  # a Silero window


def feed(machine: Endpointer, probs: list[float], t0: float = 0.0) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for i, p in enumerate(probs):
        out += [(e.kind, round(e.time, 3)) for e in machine.step(t0 + (i + 1) * W, W, p)]
    return out


def seq(*parts: tuple[float, float]) -> list[float]:
    """(probability, seconds) pieces as a window sequence."""
    return [p for p, s in parts for _ in range(round(s / W))]


# ---- transcript signal ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("I'd like to book a table.", "complete"),
    ("Can you help me?", "complete"),
    ("Great!", "complete"),
    ("I went to the store and", "incomplete"),
    ("I went to the store and.", "incomplete"),  # Whisper's period does not make "and" final
    ("I want to", "incomplete"),
    ("It was, um", "incomplete"),
    ("Give me the...", "incomplete"),
    ("Well,", "incomplete"),
    ("the weather today", "unknown"),
    ("", "unknown"),
    ("   ", "unknown"),
    ('He said "go."', "complete"),
    ("Where is it from?", "complete"),  # a question may end in a preposition
    ("What is it, um?", "incomplete"),
    ("Can you tell me about the?", "incomplete"),  # not an article, though
    ("And then?", "complete"),
    ("I think so.", "complete"),  # "so" standing for a clause
    ("We were asked to do so.", "complete"),
    ("It was late, so.", "incomplete"),  # "so" beginning one
    ("I haven't seen him since then.", "complete"),
    ("We ate, and then.", "incomplete"),
    ("I told you so.", "complete"),
    ("Book a table for 4.", "complete"),  # numbers are words: "for" is not the last one
    ("Call me at 7:30.", "complete"),
])
def test_transcript_signal(text: str, expected: str) -> None:
    assert transcript_signal(text) == expected


# ---- the pure endpointer --------------------------------------------------------------------------------------------


def test_speech_then_silence_gives_one_turn() -> None:
    m = Endpointer(start_s=0.2, silence_s=0.6, pause_s=0.25)
    events = feed(m, seq((0.0, 0.32), (0.9, 0.96), (0.05, 1.28)))
    kinds = [k for k, _ in events]
    assert kinds == ["speech_started", "silence", "pause", "turn_ended"]
    start, silence, pause, end = (t for _, t in events)
    assert start == pytest.approx(0.32 + 0.224, abs=1e-6)  # 0.2 s of speech, rounded up to whole windows
    assert silence == pytest.approx(1.28 + 0.096, abs=1e-6)  # silence_event_s 0.1: the nearest whole window
    assert pause == pytest.approx(1.28 + 0.256, abs=1e-6)
    assert end == pytest.approx(1.28 + 0.608, abs=1e-6)
    assert not m.in_speech


def test_blip_shorter_than_start_s_is_ignored() -> None:
    m = Endpointer(start_s=0.2)
    assert feed(m, seq((0.9, 0.128), (0.0, 0.64), (0.9, 0.064), (0.0, 1.0))) == []


def test_short_gaps_before_start_do_not_reset_the_count() -> None:
    m = Endpointer(start_s=0.2, start_reset_s=0.3)
    events = feed(m, seq((0.9, 0.128), (0.1, 0.096), (0.9, 0.096)))
    assert [k for k, _ in events] == ["speech_started"]
    assert m.speech_start == pytest.approx(0.0)


def test_hysteresis_band_keeps_the_pause_going() -> None:
    m = Endpointer(threshold=0.5, hysteresis=0.15, silence_s=0.6)
    # speech, silence, then probabilities of 0.4 (between 0.35 and 0.5): still silence, the turn ends on time
    events = feed(m, seq((0.9, 0.64), (0.1, 0.32), (0.4, 0.32), (0.1, 0.32)))
    assert ("turn_ended", pytest.approx(0.64 + 0.608, abs=1e-6)) in events
    # but in speech, 0.4 does not start a silence
    m2 = Endpointer(threshold=0.5, silence_s=0.6)
    assert [k for k, _ in feed(m2, seq((0.9, 0.64), (0.4, 2.0)))] == ["speech_started"]


def test_speech_resuming_in_a_pause_continues_the_turn() -> None:
    m = Endpointer(silence_s=0.6, pause_s=0.25)
    events = feed(m, seq((0.9, 0.64), (0.0, 0.448), (0.9, 0.64), (0.0, 0.7)))
    assert [k for k, _ in events] == ["speech_started", "silence", "pause", "silence", "pause", "turn_ended"]


def test_silent_and_paused_follow_the_silent_stretch() -> None:
    m = Endpointer(silence_s=0.6, pause_s=0.25, silence_event_s=0.1)
    states = []
    for t, p in enumerate(seq((0.9, 0.64), (0.0, 0.32), (0.9, 0.064)), start=1):
        m.step(t * W, W, p)
        states.append((m.silent, m.paused))
    speech, silence, again = states[:20], states[20:30], states[30:]
    assert set(speech) == {(False, False)}
    assert silence[:2] == [(False, False)] * 2 and silence[2:7] == [(True, False)] * 5  # from 0.096 s of silence
    assert silence[7:] == [(True, True)] * 3  # from 0.256 s
    assert again == [(False, False)] * 2  # the speaker went on: neither


# ---- the smart endpointer -------------------------------------------------------------------------------------------


def smart(**kw: object) -> SmartEndpointer:
    return SmartEndpointer(silence_s=1.6, pause_s=0.256, **kw)  # type: ignore[arg-type]


def run_smart(m: SmartEndpointer, verdict: float, text: str | None, text_at: float | None = None) -> list[TurnEvent]:
    """1 s of speech, then silence; the model answers `verdict` at the pause; `text` is set at `text_at`."""
    events: list[TurnEvent] = []
    t = 0.0
    for p in seq((0.9, 1.024), (0.0, 2.5)):
        t += W
        new = m.step(t, W, p)
        if text is not None and text_at is not None and abs(t - text_at) < W / 2:
            m.set_transcript(text)
        if any(e.kind == "pause" for e in new):
            m.turn_probability = verdict
            if text is not None and text_at is None:
                m.set_transcript(text)
            if m.ready_to_end():
                new += m.end_turn(t)
        events += new
    return events


def end_time(events: list[TurnEvent]) -> float:
    (end,) = [e.time for e in events if e.kind == "turn_ended"]
    return end


SPEECH_END = 1.024


def test_tier1_ends_at_pause_when_model_and_words_agree() -> None:
    assert end_time(run_smart(smart(), 0.9, "Book me a table for two.")) == pytest.approx(SPEECH_END + 0.256)


def test_tier2_complete_words_unsure_model_end_after_the_medium_silence() -> None:
    m = smart(complete_silence_s=0.6, not_done_threshold=0.2)
    assert end_time(run_smart(m, 0.5, "Book me a table.")) == pytest.approx(SPEECH_END + 0.6, abs=W)
    assert end_time(run_smart(smart(complete_silence_s=0.4), 0.3, "Great!")) == pytest.approx(
        SPEECH_END + 0.4, abs=W)


def test_tier3_waits_for_the_cap_when_words_say_more_is_coming() -> None:
    assert end_time(run_smart(smart(), 0.9, "Book me a table for")) == pytest.approx(SPEECH_END + 1.6, abs=W)
    assert end_time(run_smart(smart(), 0.9, "I went there and.")) == pytest.approx(SPEECH_END + 1.6, abs=W)
    assert end_time(run_smart(smart(), 0.5, "Well,")) == pytest.approx(SPEECH_END + 1.6, abs=W)


def test_tier3_waits_for_the_cap_when_model_is_sure_it_is_not_done() -> None:
    m = smart(not_done_threshold=0.2)
    assert end_time(run_smart(m, 0.1, "Book me a table.")) == pytest.approx(SPEECH_END + 1.6, abs=W)
    assert end_time(run_smart(smart(not_done_threshold=0.2), 0.1, None)) == pytest.approx(SPEECH_END + 1.6, abs=W)
    # at exactly the threshold the model no longer vetoes
    assert end_time(run_smart(smart(not_done_threshold=0.2), 0.2, "Yes.")) == pytest.approx(SPEECH_END + 0.6, abs=W)


def test_tier4_without_a_transcript_behaves_like_silence_endpointing() -> None:
    m = smart(unknown_silence_s=0.8)
    assert end_time(run_smart(m, 0.5, None)) == pytest.approx(SPEECH_END + 0.8, abs=W)
    assert end_time(run_smart(smart(unknown_silence_s=0.8), 0.9, "")) == pytest.approx(SPEECH_END + 0.8, abs=W)
    # words without punctuation to go by: no help either way
    assert end_time(run_smart(smart(), 0.5, "the weather today")) == pytest.approx(SPEECH_END + 0.8, abs=W)


def test_tier_silences_are_capped() -> None:
    m = SmartEndpointer(silence_s=0.5, pause_s=0.256, complete_silence_s=0.7, unknown_silence_s=0.9)
    assert end_time(run_smart(m, 0.5, "Book me a table.")) == pytest.approx(SPEECH_END + 0.5, abs=W)


def test_no_verdict_no_early_end() -> None:
    """Before the model answers (pause not reached, or a detector without a model) only the cap ends a turn."""
    m = smart(unknown_silence_s=0.3)
    events = feed(m, seq((0.9, 1.024), (0.0, 2.0)))
    assert ("turn_ended", pytest.approx(SPEECH_END + 1.6, abs=W)) in events


def test_smart_model_alone() -> None:
    assert end_time(run_smart(smart(use_transcript=False), 0.9, None)) == pytest.approx(SPEECH_END + 0.256)
    assert end_time(run_smart(smart(use_transcript=False), 0.5, "Yes.")) == pytest.approx(SPEECH_END + 1.6, abs=W)


def test_late_transcript_moves_the_deadline_stale_one_does_not_count() -> None:
    late = run_smart(smart(), 0.9, "Book me a table.", text_at=SPEECH_END + 0.5)
    assert end_time(late) == pytest.approx(SPEECH_END + 0.5, abs=2 * W)
    # before the words arrive the pause is tier 4 (0.8 s); "incomplete" at 0.5 s holds it to the cap
    held = run_smart(smart(), 0.5, "Book me a table for", text_at=SPEECH_END + 0.5)
    assert end_time(held) == pytest.approx(SPEECH_END + 1.6, abs=W)
    # words arriving after the tier-4 deadline come too late to hold the turn
    too_late = run_smart(smart(), 0.5, "Book me a table for", text_at=SPEECH_END + 1.0)
    assert end_time(too_late) == pytest.approx(SPEECH_END + 0.8, abs=W)
    # a transcript set while still speaking is stale: tier 4, not tier 1
    stale = run_smart(smart(), 0.9, "Book me a table.", text_at=0.5)
    assert end_time(stale) == pytest.approx(SPEECH_END + 0.8, abs=W)


def test_end_after_reports_the_tier() -> None:
    m = smart(complete_silence_s=0.6, not_done_threshold=0.2, unknown_silence_s=0.8)
    feed(m, seq((0.9, 1.024), (0.0, 0.288)))
    assert m.end_after() == pytest.approx(1.6)  # not asked yet
    m.turn_probability = 0.5
    assert m.end_after() == pytest.approx(0.8)
    m.set_transcript("Sure.")
    assert m.words() == "complete" and m.end_after() == pytest.approx(0.6)
    m.turn_probability = 0.85
    assert m.end_after() == 0.0
    m.set_transcript("Sure, and")
    assert m.end_after() == pytest.approx(1.6)


def test_speech_again_clears_the_verdict() -> None:
    m = smart()
    feed(m, seq((0.9, 1.024), (0.0, 0.288)))
    m.turn_probability = 0.9
    feed(m, seq((0.9, 0.1)), t0=1.312)
    assert m.turn_probability is None and m.in_speech


class _ScriptedVAD:
    """A VAD whose one stream gives one probability per pushed 512-sample frame, from a script."""

    name = "scripted"
    window_samples = 512

    def __init__(self, probs: list[float]) -> None:
        self.probs = iter(probs)

    def stream(self) -> _ScriptedVAD:
        return self

    async def windows(self, frame: AudioFrame) -> list[tuple[int, float]]:
        return [(frame.num_frames, next(self.probs))]

    def reset(self) -> None:
        pass


class _SlowModel:
    """A turn model whose i-th answer is `answers[i]`: (seconds it thinks, wall clock; verdict). It records the audio
    it was asked about and the questions dropped."""

    name = "slow"

    def __init__(self, *answers: tuple[float, float]) -> None:
        self.answers = answers
        self.heard: list[AudioFrame] = []
        self.dropped = 0

    async def completion_probability(self, audio: AudioFrame) -> float:
        self.heard.append(audio)
        seconds, verdict = self.answers[len(self.heard) - 1]
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            self.dropped += 1
            raise
        return verdict


async def _push_windows(det: SmartTurnDetector, probs: list[float], transcript: str) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for i in range(len(probs)):
        frame = AudioFrame.silence(W, 16000).with_timestamp(i * W)
        out += [(e.kind, round(e.time, 3)) for e in await det.push(frame)]
        if det.in_speech and det.silent:
            det.set_transcript(transcript)  # the pause's words are in early (the STT decodes from `silence`)
        await asyncio.sleep(0)  # between frames the event loop runs other tasks (the model's), as live
    return out


async def test_an_early_confident_verdict_ends_the_turn_at_the_pause() -> None:
    probs = seq((0.9, 0.64), (0.0, 0.64))
    model = _SlowModel((0.2, 0.95))  # still thinking at the pause: the detector waits for its verdict there
    det = SmartTurnDetector(_ScriptedVAD(probs), model, TurnOptions(detector="smart"))  # type: ignore[arg-type]
    events = await _push_windows(det, probs, "Book a table for two.")
    pause = dict(events)["pause"]
    assert events[-1] == ("turn_ended", pause)
    (clip,) = model.heard  # asked once, 2 windows (`model_lead_s`) before the pause
    assert clip.timestamp + clip.duration == pytest.approx(pause - 0.064, abs=1e-6)


async def test_an_early_verdict_short_of_confident_is_asked_again_with_the_whole_pause() -> None:
    probs = seq((0.9, 0.64), (0.0, 1.28))
    model = _SlowModel((0.0, 0.1), (0.0, 0.5))  # early: "not done"; at the pause: unsure
    det = SmartTurnDetector(_ScriptedVAD(probs), model, TurnOptions(detector="smart"))  # type: ignore[arg-type]
    events = await _push_windows(det, probs, "Book a table for two.")
    pause = dict(events)["pause"]
    early, whole = model.heard
    assert early.timestamp + early.duration == pytest.approx(pause - 0.064, abs=1e-6)
    assert whole.timestamp + whole.duration == pytest.approx(pause, abs=1e-6)
    # the second verdict counts: complete words, an unsure model -> `complete_silence_s`, not the 1.6 s cap
    assert events[-1] == ("turn_ended", round(0.64 + 0.608, 3))


async def test_speech_between_the_question_and_the_pause_drops_the_verdict() -> None:
    # silence long enough to ask (0.288 s), then speech before the pause, then a real pause
    probs = seq((0.9, 0.64), (0.0, 0.288), (0.9, 0.32), (0.0, 0.64))
    model = _SlowModel((10.0, 0.95), (0.0, 0.95))  # the first question is still open when the speaker goes on
    det = SmartTurnDetector(_ScriptedVAD(probs), model, TurnOptions(detector="smart"))  # type: ignore[arg-type]
    events = await _push_windows(det, probs, "Book a table for two.")
    assert [k for k, _ in events] == ["speech_started", "silence", "silence", "pause", "turn_ended"]
    assert model.dropped == 1 and len(model.heard) == 2


async def test_no_lead_asks_the_model_at_the_pause() -> None:
    probs = seq((0.9, 0.64), (0.0, 0.64))
    model = _SlowModel((0.0, 0.5))
    det = SmartTurnDetector(_ScriptedVAD(probs), model,  # type: ignore[arg-type]
                            TurnOptions(detector="smart", model_lead_s=0.0))
    events = await _push_windows(det, probs, "Book a table for two.")
    (clip,) = model.heard
    assert clip.timestamp + clip.duration == pytest.approx(dict(events)["pause"], abs=1e-6)


def test_options_are_validated() -> None:
    with pytest.raises(ConfigError, match="model_lead_s"):
        TurnOptions(model_lead_s=0.5)
    with pytest.raises(ConfigError):
        TurnOptions(silence_s=0.0)
    with pytest.raises(ConfigError):
        TurnOptions(threshold=1.5)
    with pytest.raises(ConfigError):
        TurnOptions(pause_s=1.0, max_silence_s=0.5)
    with pytest.raises(ConfigError, match="complete_silence_s"):
        TurnOptions(complete_silence_s=0.0)
    with pytest.raises(ConfigError, match="not_done_threshold"):
        TurnOptions(not_done_threshold=-0.1)
    with pytest.raises(ConfigError, match="must not be above"):
        TurnOptions(turn_threshold=0.5, not_done_threshold=0.6)
    with pytest.raises(ConfigError, match="unknown turn detector"):
        make_turn_detector(TurnOptions(detector="nope"))  # type: ignore[arg-type]


# ---- real speech ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def utterances(speech_dir: Path) -> list[AudioFrame]:
    """Three short gold utterances without long inner pauses (LJSpeech and "go forward ten meters")."""
    names = ["gold/goforward.flac", "gold/LJ002-0020.flac", "gold/LJ002-0035.flac"]
    return [read_audio(speech_dir / n).to_mono().resample(16000) for n in names]


@pytest.fixture(scope="module")
def shared_models() -> tuple[object, object]:
    from voxline.providers.silero import SileroVAD
    from voxline.providers.smart_turn import SmartTurnModel

    return SileroVAD(), SmartTurnModel()


async def push_all(det: TurnDetector, audio: AudioFrame, chunk_s: float = 0.02,
                   transcript: str | None = None) -> list[TurnEvent]:
    events: list[TurnEvent] = []
    for frame in audio.chunks(chunk_s):
        new = await det.push(frame)
        if transcript is not None and any(e.kind == "pause" for e in new):
            det.set_transcript(transcript)
        events += new
    return events


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["energy", "silero", "smart"])
async def test_one_utterance_one_turn(kind: str, utterances: list[AudioFrame],
                                      shared_models: tuple[object, object]) -> None:
    vad, model = shared_models
    opts = TurnOptions(detector=kind)  # type: ignore[arg-type]
    cap = {"energy": opts.energy_silence_s, "silero": opts.silence_s, "smart": opts.max_silence_s}[kind]
    for utt in utterances:
        det = make_turn_detector(opts, vad=vad, model=model)  # type: ignore[arg-type]
        assert isinstance(det, TurnDetector)
        lead = 0.5
        audio = AudioFrame.concat([AudioFrame.silence(lead, 16000), utt, AudioFrame.silence(3.0, 16000)])
        events = await push_all(det, audio.with_timestamp(100.0), transcript="Go forward ten meters.")
        kinds = [e.kind for e in events if e.kind not in ("silence", "pause")]
        assert kinds == ["speech_started", "turn_ended"], (kind, events)
        start, end = (e.time - 100.0 for e in events if e.kind not in ("silence", "pause"))
        assert lead < start < lead + 1.0
        # the utterance's speech ends at most 0.6 s before its file does (LibriVox/LJ trailing silence)
        speech_end_max = lead + utt.duration
        assert speech_end_max - 0.6 + min(cap, 0.25) <= end <= speech_end_max + cap + 0.15, (kind, end)
        assert not det.in_speech


@pytest.mark.slow
async def test_frame_size_and_reset(utterances: list[AudioFrame], shared_models: tuple[object, object]) -> None:
    vad, _ = shared_models
    audio = AudioFrame.concat([AudioFrame.silence(0.3, 16000), utterances[0], AudioFrame.silence(1.5, 16000)])
    det = SileroTurnDetector(vad)  # type: ignore[arg-type]
    ref = await push_all(det, audio, 0.02)
    det.reset()
    again = await push_all(det, audio, 0.02)
    assert again == ref
    odd = await push_all(SileroTurnDetector(vad), audio, 0.037)  # type: ignore[arg-type]
    assert [e.kind for e in odd] == [e.kind for e in ref]
    for a, b in zip(odd, ref, strict=True):
        assert abs(a.time - b.time) < 0.001


@pytest.mark.slow
async def test_energy_detector_needs_no_model(utterances: list[AudioFrame]) -> None:
    det = EnergyTurnDetector()
    quiet = await push_all(det, AudioFrame.silence(2.0, 16000))
    assert quiet == [] and not det.in_speech
    events = await push_all(det, AudioFrame.concat([utterances[0], AudioFrame.silence(1.0, 16000)]))
    assert events[0].kind == "speech_started" and events[-1].kind == "turn_ended"


@pytest.mark.slow
async def test_smart_detector_hears_the_turn_so_far(utterances: list[AudioFrame],
                                                    shared_models: tuple[object, object]) -> None:
    vad, _ = shared_models
    heard: list[AudioFrame] = []

    class Recording:
        name = "recording"

        async def completion_probability(self, audio: AudioFrame) -> float:
            heard.append(audio)
            return 0.99

    det = SmartTurnDetector(vad, Recording())  # type: ignore[arg-type]
    utt = utterances[0]
    audio = AudioFrame.concat([AudioFrame.silence(1.0, 16000), utt, AudioFrame.silence(2.0, 16000)])
    events = await push_all(det, audio, transcript="Go forward ten meters.")
    assert [e.kind for e in events] == ["speech_started", "silence", "pause", "turn_ended"]
    (clip,) = heard  # confident `model_lead_s` before the pause: that verdict stands
    pause = events[2].time
    start = events[0].time
    # the turn so far: from 0.2 s before its speech began (at least 0.2 s before speech_started) up to the moment
    # the model was asked
    assert clip.timestamp + clip.duration == pytest.approx(pause - TurnOptions().model_lead_s, abs=0.021)
    assert 1.0 - 0.2 - 0.05 <= clip.timestamp <= start - 0.4
    assert pause < events[3].time <= pause + 0.033  # the transcript came right after the pause event


def test_sample_rate_manifest_is_16k(speech_dir: Path) -> None:
    rows = [json.loads(x) for x in (speech_dir / "manifest.jsonl").read_text().splitlines() if x.strip()]
    assert {r["sample_rate"] for r in rows if r["file"].startswith("gold/")} >= {16000}

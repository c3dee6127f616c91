"""`voxline audio ...`: inspect, convert and edit audio files, one or many at a time (globs and output patterns)."""

from __future__ import annotations

import glob
import json
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from voxline.cli.common import reports_errors, stderr
from voxline.errors import AudioError, VoxlineError

PATTERN_HELP = ("Output path or pattern: {stem} (name without extension), {name}, {ext}, {parent} and {index} "
                "(1-based, formattable: {index:03d}) are filled in per input file.")


def expand_inputs(patterns: tuple[str, ...]) -> list[Path]:
    """Files named by paths or globs, in order, without duplicates; a glob that matches nothing is an error."""
    out: list[Path] = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(pattern), recursive=True))
            matches = [m for m in matches if m.is_file()]
            if not matches:
                raise AudioError(f"no files match {pattern!r}")
        else:
            matches = [Path(os.path.expanduser(pattern))]
        out.extend(m for m in matches if m not in out)
    return out


def fill_pattern(pattern: str, source: Path, index: int, many: bool) -> Path:
    """Fill an output pattern for one input; with many inputs a plain path (no braces) is an error."""
    if many and "{" not in pattern:
        raise AudioError(f"{pattern!r} would be written once per input file; use a pattern such as "
                         "'out/{stem}.wav'")
    try:
        text = pattern.format(stem=source.stem, name=source.name, ext=source.suffix.lstrip("."),
                              parent=str(source.parent), index=index)
    except (KeyError, IndexError, ValueError) as exc:
        raise AudioError(f"bad output pattern {pattern!r} ({exc}); use {{stem}}, {{name}}, {{ext}}, "
                         "{parent} or {index}") from None
    return Path(text)


def make_parent(path: Path) -> Path:
    """Create the folder `path` goes in; a parent that is a file or can't be made is an `AudioError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AudioError(f"cannot create the folder for {path}: {exc.strerror or exc}") from exc
    return path


def output_path(pattern: str, source: Path, index: int, many: bool) -> Path:
    """The filled pattern for one input, its folder created."""
    return make_parent(fill_pattern(pattern, source, index, many))


def _progress(total: int, quiet: bool) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=stderr, disable=quiet or total < 2, transient=False)


def _each(files: list[Path], label: str, quiet: bool) -> Iterator[tuple[int, Path]]:
    with _progress(len(files), quiet) as bar:
        task = bar.add_task(label, total=len(files))
        for i, path in enumerate(files, 1):
            bar.update(task, description=f"{label} {path.name}")
            yield i, path
            bar.advance(task)


def _error(message: str) -> None:
    """One red line per failed file: never wrapped, and brackets in file names are not rich markup."""
    stderr.print(message, style="red", markup=False, highlight=False, soft_wrap=True)


def parse_time(text: str) -> float:
    """Milliseconds from '1.5s', '1500ms', '1:02.5' or a plain number of seconds."""
    t = text.strip().lower()
    try:
        if t.endswith("ms"):
            return float(t[:-2])
        if t.endswith("s"):
            return float(t[:-1]) * 1000
        if ":" in t:  # the sign belongs to the whole time: -1:00.5 is -60.5 s, not -60 s + 0.5 s
            sign, body = (-1, t[1:]) if t.startswith("-") else (1, t.removeprefix("+"))
            fields = body.split(":")
            if any(f.strip().startswith(("-", "+")) for f in fields):
                raise ValueError(text)
            return sign * sum(float(v) * 60 ** i for i, v in enumerate(reversed(fields))) * 1000
        return float(t) * 1000
    except ValueError:
        raise AudioError(f"bad time {text!r}; write e.g. 1.5s, 1500ms or 1:02.5") from None


def _batch(inputs: tuple[str, ...], output: str, label: str, quiet: bool, edit: Callable[[Any], Any],
           bitrate: str | None = None) -> None:
    from voxline.audio.segment import Sound

    files = expand_inputs(inputs)
    # a bad pattern fails once, up front; a file that can't be read or written fails alone
    targets = [fill_pattern(output, path, i, len(files) > 1) for i, path in enumerate(files, 1)]
    failures = 0
    for (_, path), target in zip(_each(files, label, quiet), targets, strict=True):
        try:
            edit(Sound.from_file(path)).export(make_parent(target), bitrate=bitrate)
        except VoxlineError as exc:
            if len(files) == 1:
                raise
            failures += 1
            _error(f"{path}: {exc}")
            continue
        if not quiet:
            stderr.print(f"{path} -> {target}")
    if failures:
        raise click.ClickException(f"{failures} of {len(files)} files failed")


OUTPUT = click.option("-o", "--output", required=True, help=PATTERN_HELP)
QUIET = click.option("-q", "--quiet", is_flag=True, help="No progress output.")
BITRATE = click.option("--bitrate", default=None, help="Bit rate for lossy outputs, e.g. 64k.")


@click.group()
def audio() -> None:
    """Inspect, convert and edit audio files (wav, flac, ogg, mp3, opus, m4a).

    \b
    Examples:
      voxline audio info speech/*.flac --json
      voxline audio convert talk.flac talk.mp3 --bitrate 64k
      voxline audio normalize 'in/*.flac' -o 'out/{stem}.wav'
      voxline audio split long.wav -o 'parts/{stem}_{index:03d}.wav' --min-silence 500
      voxline audio analyze talk.wav --json --plot talk.png
    """


@audio.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file, in a list.")
@reports_errors
def info(files: tuple[str, ...], as_json: bool) -> None:
    """Duration, rate, channels and codec of FILES, read from the headers (nothing is decoded).

    \b
    Examples:
      voxline audio info talk.wav
      voxline audio info 'speech/**/*.flac' --json
    """
    from voxline.audio.codecs import audio_info

    rows: list[dict[str, Any]] = []
    failed = 0
    for path in expand_inputs(files):
        try:
            i = audio_info(path)
        except VoxlineError as exc:
            failed += 1
            _error(str(exc))
            continue
        rows.append({"path": str(path), "duration_s": round(i.duration_s, 3), "sample_rate": i.sample_rate,
                     "channels": i.channels, "codec": i.codec, "container": i.container, "bit_rate": i.bit_rate})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        _info_table(rows)
    if failed:
        raise click.ClickException(f"{failed} of {failed + len(rows)} files could not be read")


def _info_table(rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("file", "duration", "rate", "ch", "codec", "container", "bit rate")
    for r in rows:
        table.add_row(r["path"], f"{r['duration_s']:.3f} s", f"{r['sample_rate']} Hz", str(r["channels"]),
                      r["codec"], r["container"], f"{r['bit_rate'] // 1000} kb/s" if r["bit_rate"] else "-")
    Console().print(table)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@click.argument("output")
@click.option("--rate", type=int, default=None, help="Resample to this rate (Hz).")
@click.option("--channels", type=int, default=None, help="Mix to this many channels (1 or, from mono, n).")
@click.option("--sample-width", type=click.Choice(["1", "2", "4"]), default=None, help="Bytes per sample (wav).")
@BITRATE
@QUIET
@reports_errors
def convert(inputs: tuple[str, ...], output: str, rate: int | None, channels: int | None,
            sample_width: str | None, bitrate: str | None, quiet: bool) -> None:
    """Convert INPUTS to OUTPUT; the format comes from OUTPUT's extension.

    With several inputs (or a glob) OUTPUT is a pattern.

    \b
    Examples:
      voxline audio convert talk.flac talk.mp3
      voxline audio convert 'in/*.wav' 'out/{stem}.opus' --bitrate 24k
      voxline audio convert call.m4a call.wav --rate 8000 --channels 1
    """
    def edit(s: Any) -> Any:
        if rate:
            s = s.set_frame_rate(rate)
        if channels:
            s = s.set_channels(channels)
        if sample_width:
            s = s.set_sample_width(int(sample_width))
        return s

    _batch(inputs, output, "convert", quiet, edit, bitrate)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--headroom", type=float, default=0.1, show_default=True, help="Peak level below 0 dBFS (dB).")
@click.option("--lufs", type=float, default=None, help="Normalize loudness to this LUFS (BS.1770) instead.")
@BITRATE
@QUIET
@reports_errors
def normalize(inputs: tuple[str, ...], output: str, headroom: float, lufs: float | None, bitrate: str | None,
              quiet: bool) -> None:
    """Scale INPUTS so their peak sits HEADROOM dB below full scale (or their loudness is --lufs).

    \b
    Examples:
      voxline audio normalize 'in/*.flac' -o 'out/{stem}.wav'
      voxline audio normalize podcast.wav -o podcast_norm.wav --lufs -16
    """
    def edit(s: Any) -> Any:
        if lufs is None:
            return s.normalize(headroom)
        from voxline.audio.analysis import normalize_loudness

        return normalize_loudness(s, lufs)

    _batch(inputs, output, "normalize", quiet, edit, bitrate)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--start", default=None, help="Keep from here (1.5s, 1500ms, 0:01.5); negative counts from the end.")
@click.option("--end", default=None, help="Keep up to here.")
@click.option("--silence", "strip", is_flag=True, help="Cut leading and trailing silence instead.")
@click.option("--thresh", type=float, default=-50.0, show_default=True, help="Silence level for --silence (dBFS).")
@BITRATE
@QUIET
@reports_errors
def trim(inputs: tuple[str, ...], output: str, start: str | None, end: str | None, strip: bool, thresh: float,
         bitrate: str | None, quiet: bool) -> None:
    """Cut INPUTS to a time range, or cut their leading and trailing silence.

    \b
    Examples:
      voxline audio trim talk.wav -o intro.wav --start 0 --end 5s
      voxline audio trim 'takes/*.wav' -o 'clean/{name}' --silence --thresh -45
    """
    if not strip and start is None and end is None:
        raise click.UsageError("give --start and/or --end, or --silence")

    def edit(s: Any) -> Any:
        if strip:
            lead = s.detect_leading_silence(thresh)
            tail = s.reverse().detect_leading_silence(thresh)
            return s[lead:max(lead, len(s) - tail)]
        a = parse_time(start) if start is not None else 0
        b = parse_time(end) if end is not None else None
        return s[a:b]

    _batch(inputs, output, "trim", quiet, edit, bitrate)


@audio.command()
@click.argument("input_file", metavar="INPUT")
@OUTPUT
@click.option("--min-silence", type=int, default=500, show_default=True, help="Shortest silence that splits (ms).")
@click.option("--thresh", type=float, default=None, help="Silence level in dBFS [default: the file's dBFS - 16].")
@click.option("--keep", type=int, default=100, show_default=True, help="Silence kept around each part (ms).")
@click.option("--seek-step", type=int, default=10, show_default=True, help="Window step (ms).")
@click.option("--json", "as_json", is_flag=True, help="Print the parts' times as JSON.")
@BITRATE
@QUIET
@reports_errors
def split(input_file: str, output: str, min_silence: int, thresh: float | None, keep: int, seek_step: int,
          as_json: bool, bitrate: str | None, quiet: bool) -> None:
    """Split INPUT at its silences into numbered parts.

    \b
    Examples:
      voxline audio split long.wav -o 'parts/{stem}_{index:03d}.wav'
      voxline audio split call.flac -o 'turns/{index}.flac' --min-silence 700 --thresh -40 --json
    """
    from voxline.audio.segment import Sound
    from voxline.audio.silence import keep_ranges

    source = Path(input_file)
    s = Sound.from_file(source)
    level = thresh if thresh is not None else (s.dBFS - 16 if math.isfinite(s.dBFS) else -60.0)
    ranges = keep_ranges(s.detect_nonsilent(min_silence, level, seek_step), keep)
    if "{" not in output:
        raise AudioError("split writes several files: give a pattern such as 'parts/{stem}_{index:03d}.wav'")
    parts = []
    for i, (a, b) in enumerate(ranges, 1):
        target = output_path(output, source, i, True)
        s[max(a, 0):min(b, len(s))].export(target, bitrate=bitrate)
        parts.append({"path": str(target), "start_ms": max(a, 0), "end_ms": min(b, len(s))})
    if as_json:
        click.echo(json.dumps(parts, indent=2))
    elif not quiet:
        stderr.print(f"{source}: {len(parts)} parts (silence below {level:.1f} dBFS for {min_silence} ms)")


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--crossfade", type=float, default=0, show_default=True, help="Overlap between files (ms).")
@click.option("--gap", type=float, default=0, show_default=True, help="Silence between files (ms).")
@BITRATE
@reports_errors
def concat(inputs: tuple[str, ...], output: str, crossfade: float, gap: float, bitrate: str | None) -> None:
    """Join INPUTS end to end into one file; rates and channels are synced up to the highest.

    \b
    Examples:
      voxline audio concat a.wav b.wav c.wav -o all.wav
      voxline audio concat 'parts/*.wav' -o joined.mp3 --gap 250
    """
    from voxline.audio.segment import Sound

    files = expand_inputs(inputs)
    out = None
    for _, path in _each(files, "concat", False):
        s = Sound.from_file(path)
        if out is None:
            out = s
            continue
        if gap:
            out = out + Sound.silent(gap, out.frame_rate, out.channels)
        out = out.append(s, crossfade=crossfade)
    assert out is not None
    out.export(output_path(output, files[0], 1, False), bitrate=bitrate)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--in", "fade_in", type=float, default=0, help="Fade-in length (ms).")
@click.option("--out", "fade_out", type=float, default=0, help="Fade-out length (ms).")
@BITRATE
@QUIET
@reports_errors
def fade(inputs: tuple[str, ...], output: str, fade_in: float, fade_out: float, bitrate: str | None,
         quiet: bool) -> None:
    """Fade INPUTS in and/or out.

    \b
    Examples:
      voxline audio fade song.wav -o song_faded.wav --in 500 --out 2000
    """
    if not fade_in and not fade_out:
        raise click.UsageError("give --in and/or --out (ms)")
    _batch(inputs, output, "fade", quiet, lambda s: s.fade_in(fade_in).fade_out(fade_out) if fade_in else
           s.fade_out(fade_out), bitrate)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--db", type=float, required=True, help="Gain in dB (negative: quieter).")
@BITRATE
@QUIET
@reports_errors
def gain(inputs: tuple[str, ...], output: str, db: float, bitrate: str | None, quiet: bool) -> None:
    """Change the level of INPUTS by --db decibels (clipping at full scale).

    \b
    Examples:
      voxline audio gain quiet.wav -o louder.wav --db 6
      voxline audio gain 'in/*.wav' -o 'out/{name}' --db=-3
    """
    _batch(inputs, output, "gain", quiet, lambda s: s + db, bitrate)


@audio.command()
@click.argument("inputs", nargs=-1, required=True)
@OUTPUT
@click.option("--threshold", type=float, default=-20.0, show_default=True, help="Level where it starts (dBFS).")
@click.option("--ratio", type=float, default=4.0, show_default=True, help="Compression ratio.")
@click.option("--attack", type=float, default=5.0, show_default=True, help="Attack (ms).")
@click.option("--release", type=float, default=50.0, show_default=True, help="Release (ms).")
@BITRATE
@QUIET
@reports_errors
def compress(inputs: tuple[str, ...], output: str, threshold: float, ratio: float, attack: float, release: float,
             bitrate: str | None, quiet: bool) -> None:
    """Reduce the dynamic range of INPUTS (downward compressor).

    \b
    Examples:
      voxline audio compress voice.wav -o voice_c.wav --threshold -24 --ratio 3
    """
    _batch(inputs, output, "compress", quiet,
           lambda s: s.compress_dynamic_range(threshold, ratio, attack, release), bitrate)


@audio.command()
@click.argument("input_file", metavar="INPUT")
@click.option("--json", "as_json", is_flag=True, help="Print the analysis as JSON.")
@click.option("--plot", type=click.Path(dir_okay=False), default=None,
              help="Write a PNG: waveform with segments, spectrogram, pitch track.")
@click.option("--no-pitch", is_flag=True, help="Skip pYIN pitch tracking (the slowest part).")
@reports_errors
def analyze(input_file: str, as_json: bool, plot: str | None, no_pitch: bool) -> None:
    """Levels, loudness (LUFS), tempo, spectral centroid, pitch, onsets and speech/music/silence segments of INPUT.

    \b
    Examples:
      voxline audio analyze talk.wav
      voxline audio analyze song.mp3 --json --plot song.png
    """
    from voxline.audio.analysis import summary
    from voxline.audio.segment import Sound

    sound = Sound.from_file(input_file)
    result = {"path": input_file, **summary(sound, with_pitch=not no_pitch)}
    if plot:
        from voxline.audio.analysis import plot_analysis

        result["plot"] = str(plot_analysis(sound, plot, with_pitch=not no_pitch))
    if as_json:
        click.echo(json.dumps(result, indent=2))
        return
    for key, value in result.items():
        if key == "segments":
            click.echo("segments:")
            for seg in value:
                click.echo(f"  {seg['start_s']:8.2f} - {seg['end_s']:8.2f} s  {seg['label']}")
        else:
            click.echo(f"{key}: {value}")

"""Session records: written as they happen, readable after SIGKILL, listed and exported by the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from voxline.audio.frame import AudioFrame
from voxline.cli import main
from voxline.records import RecordError, RecordStore, SessionRecorder, get_session, list_sessions, session_text

CHILD = textwrap.dedent("""
    import sys, time
    from voxline.records import RecordStore, SessionRecorder
    store = RecordStore(sys.argv[1])
    rec = SessionRecorder(store, "killed-session", metadata={"agent": "test"})
    turn = 0
    while True:
        turn += 1
        rec({"type": "transcript", "final": True, "text": f"question {turn}"})
        rec({"type": "provider", "event": "fallback", "provider": "b", "from": "a"})
        rec({"type": "agent_done", "text": f"answer {turn}", "interrupted": False})
        rec({"type": "timeline", "turn": turn, "stages_ms": {"speech_end": 0.0, "first_audio_sent": 500.0},
             "voice_to_voice_ms": 500.0})
        store.flush()
        print(turn, flush=True)   # acknowledged: this turn is committed
        time.sleep(0.002)
""")


def test_sigkill_mid_call_keeps_every_completed_turn(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(db)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    acked = 0
    deadline = time.monotonic() + 60
    while acked < 40 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked = int(line)
    os.kill(proc.pid, signal.SIGKILL)  # mid-call: the child is writing the next turns right now
    proc.wait(10)
    assert acked >= 40, "the child did not get going"
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    session = get_session(db, "killed-session")
    turns = session["turns"]
    numbers = [t["turn"] for t in turns]
    assert numbers[:acked] == list(range(1, acked + 1))  # every acknowledged turn, in order
    assert len(turns) <= acked + 1  # at most the turn in flight beyond
    assert turns[0]["user_text"] == "question 1" and turns[0]["agent_text"] == "answer 1"
    assert turns[0]["timeline"]["first_audio_sent"] == 500.0
    assert session["ended_at"] is None and session["metadata"] == {"agent": "test"}
    assert sum(e["type"] == "provider" for e in session["events"]) >= acked
    assert "did not end cleanly" in session_text(session)


async def test_recorder_files_session_events_into_turns(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.db")

    class Meter:
        def __init__(self) -> None:
            self.events = 0

        def __call__(self, event: dict) -> None:
            self.events += 1

        def close_turn(self) -> object:
            return type("C", (), {"total": 0.0125})()

        def session_total(self) -> float:
            return 0.025

    meter = Meter()
    rec = SessionRecorder(store, "s1", meter=meter, record_audio=True)
    for event in (
        {"type": "speech_started", "time": 0.1},
        {"type": "transcript", "final": False, "text": "what ti"},
        {"type": "transcript", "final": True, "text": "what time is it"},
        {"type": "agent_text", "text": "It is four."},
        {"type": "usage", "kind": "tts", "characters": 11},
        {"type": "interrupted", "heard": "It is", "planned": "It is four."},
        {"type": "agent_done", "text": "It is", "interrupted": True},
        {"type": "timeline", "turn": 1, "stages_ms": {"speech_end": 0, "first_audio_sent": 640.5},
         "voice_to_voice_ms": 640.5},
        {"type": "error", "source": "reply", "message": "tts broke"},
    ):
        rec({"session": "s1", **event})
    rec.audio("user", AudioFrame.silence(0.5, 16000))
    rec.close()
    await asyncio.to_thread(store.flush)
    assert meter.events == 9
    s = get_session(tmp_path / "r.db", "s1")
    assert s["turns"] == [{"turn": 1, "at": s["turns"][0]["at"], "user_text": "what time is it",
                           "agent_text": "It is", "interrupted": True,
                           "timeline": {"speech_end": 0, "first_audio_sent": 640.5},
                           "voice_to_voice_ms": 640.5, "cost_usd": 0.0125}]
    types = [e["type"] for e in s["events"]]
    assert "speech_started" not in types and types.count("transcript") == 1 and "error" in types
    assert s["audio_s"] == {"user": 0.5} and s["cost_usd"] == 0.025 and s["ended_at"] is not None
    listed = list_sessions(tmp_path / "r.db")
    assert listed[0]["id"] == "s1" and listed[0]["turns"] == 1 and listed[0]["errors"] == 1
    store.close()


def test_writes_do_not_block(tmp_path: Path) -> None:
    store = RecordStore(tmp_path / "r.db")
    store.start_session("fast")
    start = time.perf_counter()
    for i in range(2000):
        store.add_event("fast", {"type": "transcript", "final": True, "text": f"t{i}"})
    enqueue = time.perf_counter() - start
    assert enqueue < 0.2, f"2000 writes took {enqueue:.3f} s to enqueue"
    assert store.flush(30)
    assert len(get_session(tmp_path / "r.db", "fast")["events"]) == 2000
    store.close()


def test_cli_list_show_export(tmp_path: Path) -> None:
    db = tmp_path / "cli.db"
    store = RecordStore(db)
    rec = SessionRecorder(store, "abc123")
    rec({"type": "transcript", "final": True, "text": "hello"})
    rec({"type": "agent_done", "text": "Hi! How can I help?", "interrupted": False})
    rec({"type": "timeline", "turn": 1, "stages_ms": {}, "voice_to_voice_ms": 700.0})
    rec.close()
    store.close()
    runner = CliRunner()
    out = runner.invoke(main, ["sessions", "list", "--db", str(db)])
    assert out.exit_code == 0 and "abc123" in out.output
    out = runner.invoke(main, ["sessions", "show", "abc", "--db", str(db)])  # a prefix is enough
    assert out.exit_code == 0 and "User:  hello" in out.output and "Agent: Hi! How can I help?" in out.output
    out = runner.invoke(main, ["sessions", "export", "abc123", "--db", str(db), "--format", "json"])
    assert out.exit_code == 0 and json.loads(out.output)["turns"][0]["voice_to_voice_ms"] == 700.0
    out = runner.invoke(main, ["sessions", "export", "abc123", "--db", str(db), "-o", str(tmp_path / "no" / "x.txt")])
    assert out.exit_code == 1 and "cannot write" in out.output and "Traceback" not in out.output
    out = runner.invoke(main, ["sessions", "export", "nope", "--db", str(db)])
    assert out.exit_code == 1 and "no session 'nope'" in out.output
    out = runner.invoke(main, ["sessions", "list", "--db", str(tmp_path / "missing.db")])
    assert out.exit_code == 1 and "no session records" in out.output


def test_foreign_or_newer_database_is_refused(tmp_path: Path) -> None:
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(RecordError):
        list_sessions(bad)
    newer = tmp_path / "newer.db"
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version=99")
    with pytest.raises(RecordError, match="schema 99"):
        RecordStore(newer)

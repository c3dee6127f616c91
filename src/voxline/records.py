"""Session records: transcript, per-turn timeline, events, cost and (opt-in) audio, in SQLite as they happen.

Durability: the database runs in WAL mode with `synchronous=NORMAL`, and every item is its own transaction,
committed as soon as the writer thread takes it. In WAL mode a commit appends to the `-wal` file with `write()`;
the data is then in the operating system's page cache, which survives the death of the process (SIGKILL, a
crash, OOM kill): only what was still in the writer's queue (the item in flight) can be lost. What NORMAL does
not cover is a power cut or kernel crash, where the last commits before the failure may be rolled back (the
database stays consistent); `RecordStore(durable=True)` uses `synchronous=FULL` (an fsync per commit) for that.

One writer per process: a daemon thread owning its own connection, fed by a queue. The recording methods only
`put_nowait` on that queue, so the event loop never waits for the disk. Readers (the CLI, `/sessions` routes)
open their own connections; WAL lets them read while the writer writes.

`SessionRecorder(store, session_id)` is a session observer (`Session(observers=(recorder,))`): it files the
session's events into turns. Schema version: `PRAGMA user_version`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voxline.audio.frame import AudioFrame
from voxline.errors import VoxlineError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    ended_at REAL,
    metadata TEXT NOT NULL DEFAULT '{}',
    cost_usd REAL
);
CREATE TABLE IF NOT EXISTS turns (
    session_id TEXT NOT NULL REFERENCES sessions(id),
    turn INTEGER NOT NULL,
    at REAL NOT NULL,
    user_text TEXT,
    agent_text TEXT,
    interrupted INTEGER NOT NULL DEFAULT 0,
    timeline TEXT NOT NULL DEFAULT '{}',
    voice_to_voice_ms REAL,
    cost_usd REAL,
    PRIMARY KEY (session_id, turn)
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    at REAL NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_session ON events(session_id, id);
CREATE TABLE IF NOT EXISTS audio (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id TEXT NOT NULL REFERENCES sessions(id),
    at REAL NOT NULL,
    role TEXT NOT NULL,
    sample_rate INTEGER NOT NULL,
    channels INTEGER NOT NULL,
    pcm BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS audio_session ON audio(session_id, id);
"""
# events too chatty to be worth a row each
_SKIPPED_EVENTS = frozenset({"speech_started"})


class RecordError(VoxlineError):
    """A records database that cannot be opened or read, or a session that is not in it."""


def default_path() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voxline" / "sessions.db"


def _connect(path: Path, durable: bool) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        conn.execute("PRAGMA foreign_keys=ON")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RecordError(f"{path} has records schema {version}; this voxline knows up to {SCHEMA_VERSION}. "
                              "Upgrade voxline to read it.")
        if version < SCHEMA_VERSION:
            conn.executescript(_SCHEMA)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        return conn
    except sqlite3.DatabaseError as exc:
        raise RecordError(f"cannot open the session records at {path}: {exc}") from exc


_STOP = object()


class RecordStore:
    """The records database of one process: non-blocking writes through one writer thread, and reads."""

    def __init__(self, path: str | Path | None = None, *, durable: bool = False, max_queue: int = 10000) -> None:
        self.path = Path(path) if path is not None else default_path()
        self.durable = durable
        self._conn = _connect(self.path, durable)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max_queue)
        self.dropped = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="voxline-records", daemon=True)
        self._thread.start()

    # ---- writer -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                if isinstance(item, threading.Event):
                    item.set()
                    continue
                sql, params = item
                try:
                    self._conn.execute(sql, params)  # autocommit: one transaction per item
                except sqlite3.Error as exc:
                    self.failed += 1
                    log.error("session record not written (%s): %s", exc, sql.split("(")[0])
            finally:
                self._queue.task_done()

    def _put(self, sql: str, params: tuple[Any, ...]) -> None:
        try:
            self._queue.put_nowait((sql, params))
        except queue.Full:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("session records are not keeping up; %d items dropped", self.dropped)

    def start_session(self, session_id: str, metadata: dict[str, Any] | None = None,
                      at: float | None = None) -> None:
        self._put("INSERT OR IGNORE INTO sessions (id, started_at, metadata) VALUES (?, ?, ?)",
                  (session_id, at or time.time(), json.dumps(metadata or {}, default=str)))

    def add_event(self, session_id: str, event: dict[str, Any], at: float | None = None) -> None:
        data = {k: v for k, v in event.items() if k not in ("session", "type")}
        self._put("INSERT INTO events (session_id, at, type, data) VALUES (?, ?, ?, ?)",
                  (session_id, at or time.time(), str(event.get("type", "event")), json.dumps(data, default=str)))

    def add_turn(self, session_id: str, turn: int, *, user_text: str | None, agent_text: str | None,
                 interrupted: bool = False, timeline: dict[str, Any] | None = None,
                 voice_to_voice_ms: float | None = None, cost_usd: float | None = None) -> None:
        self._put("INSERT OR REPLACE INTO turns (session_id, turn, at, user_text, agent_text, interrupted, timeline,"
                  " voice_to_voice_ms, cost_usd) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                  (session_id, turn, time.time(), user_text, agent_text, int(interrupted),
                   json.dumps(timeline or {}), voice_to_voice_ms, cost_usd))

    def add_audio(self, session_id: str, role: str, frame: AudioFrame) -> None:
        """Opt-in recording: append a chunk of the caller's ("user") or the agent's ("agent") audio."""
        self._put("INSERT INTO audio (session_id, at, role, sample_rate, channels, pcm) VALUES (?, ?, ?, ?, ?, ?)",
                  (session_id, time.time(), role, frame.sample_rate, frame.channels, frame.pcm()))

    def end_session(self, session_id: str, cost_usd: float | None = None, at: float | None = None) -> None:
        self._put("UPDATE sessions SET ended_at = ?, cost_usd = COALESCE(?, cost_usd) WHERE id = ?",
                  (at or time.time(), cost_usd, session_id))

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Block until everything queued so far is committed (not from the event loop: use `asyncio.to_thread`)."""
        done = threading.Event()
        self._queue.put(done)
        return done.wait(timeout)

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join(30)
        self._conn.close()

    # ---- reading ------------------------------------------------------------------------------------------------

    def list_sessions(self, limit: int = 50) -> list[dict[str, Any]]:
        return list_sessions(self.path, limit)

    def get_session(self, session_id: str) -> dict[str, Any]:
        return get_session(self.path, session_id)


def _open_readonly(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    if not p.exists():
        raise RecordError(f"no session records at {p} (nothing recorded yet?)")
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        version = conn.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise RecordError(f"{p} is not a voxline records database: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise RecordError(f"{p} has records schema {version}; this voxline reads schema {SCHEMA_VERSION}")
    return conn


def list_sessions(path: str | Path, limit: int = 50) -> list[dict[str, Any]]:
    """Newest first: id, start, end (None: still running, or the process died), turns, events, cost."""
    with contextlib.closing(_open_readonly(path)) as conn:
        rows = conn.execute(
            "SELECT s.id, s.started_at, s.ended_at, s.cost_usd,"
            " (SELECT COUNT(*) FROM turns t WHERE t.session_id = s.id) AS turns,"
            " (SELECT COUNT(*) FROM events e WHERE e.session_id = s.id AND e.type = 'error') AS errors"
            " FROM sessions s ORDER BY s.started_at DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]


def get_session(path: str | Path, session_id: str) -> dict[str, Any]:
    """One session with its turns (in order), events and the seconds of audio recorded per role."""
    with contextlib.closing(_open_readonly(path)) as conn:
        row = conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        if row is None:
            matches = conn.execute("SELECT id FROM sessions WHERE id LIKE ? LIMIT 2", (session_id + "%",)).fetchall()
            if len(matches) != 1:
                raise RecordError(f"no session {session_id!r} in the records")
            row = conn.execute("SELECT * FROM sessions WHERE id = ?", (matches[0]["id"],)).fetchone()
        sid = row["id"]
        session = dict(row)
        session["metadata"] = json.loads(session["metadata"] or "{}")
        session["turns"] = [{**dict(t), "timeline": json.loads(t["timeline"]), "interrupted": bool(t["interrupted"])}
                            for t in conn.execute("SELECT * FROM turns WHERE session_id = ? ORDER BY turn", (sid,))]
        for t in session["turns"]:
            t.pop("session_id", None)
        session["events"] = [{"at": e["at"], "type": e["type"], **json.loads(e["data"])}
                             for e in conn.execute("SELECT at, type, data FROM events WHERE session_id = ? "
                                                   "ORDER BY id", (sid,))]
        session["audio_s"] = {r["role"]: round(r["seconds"], 3) for r in conn.execute(
            "SELECT role, SUM(LENGTH(pcm) / (2.0 * channels * sample_rate)) AS seconds FROM audio "
            "WHERE session_id = ? GROUP BY role", (sid,))}
        return session


def session_text(session: dict[str, Any]) -> str:
    """A readable transcript of one session (`voxline sessions export --format txt`)."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(session["started_at"]))
    lines = [f"Session {session['id']}  started {started}"]
    if session.get("cost_usd") is not None:
        lines.append(f"Cost: ${session['cost_usd']:.4f}")
    lines.append("")
    for t in session["turns"]:
        if t.get("user_text"):
            lines.append(f"[{t['turn']}] User:  {t['user_text']}")
        if t.get("agent_text") is not None:
            mark = "  (interrupted)" if t["interrupted"] else ""
            lines.append(f"[{t['turn']}] Agent: {t['agent_text']}{mark}")
        if t.get("voice_to_voice_ms") is not None:
            lines.append(f"      voice-to-voice {t['voice_to_voice_ms']:.0f} ms")
    notable = [e for e in session["events"] if e["type"] in ("error", "provider")]
    if notable:
        lines += ["", "Events:"]
        for e in notable:
            detail = ", ".join(f"{k}={v}" for k, v in e.items() if k not in ("at", "type"))
            lines.append(f"  {e['type']}: {detail}")
    if not session.get("ended_at"):
        lines += ["", "(the session did not end cleanly: the process stopped during the call, or it is running)"]
    return "\n".join(lines) + "\n"


class SessionRecorder:
    """Observer of one session's events that writes them, and one row per turn, to a `RecordStore`.

    A turn row is written when the session emits the turn's `timeline` event (after `agent_done`), with the last
    final transcript as the user's text. `cost`: an optional callable returning the cost of the turn that just
    ended (e.g. `CostMeter.close_turn`), fed the events first when it is itself an observer.
    """

    def __init__(self, store: RecordStore, session_id: str, *, metadata: dict[str, Any] | None = None,
                 meter: Any = None, record_audio: bool = False) -> None:
        self.store, self.session_id, self.meter = store, session_id, meter
        self.record_audio = record_audio
        self._user_text: str | None = None
        self._agent: tuple[str, bool] | None = None
        store.start_session(session_id, metadata)

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if self.meter is not None and callable(self.meter):
            self.meter(event)
        if kind == "transcript" and not event.get("final"):
            return  # interim results: too many, and superseded by the final one
        if kind not in _SKIPPED_EVENTS:
            self.store.add_event(self.session_id, event)
        if kind == "transcript":
            self._user_text = str(event.get("text", ""))
        elif kind == "agent_done":
            self._agent = (str(event.get("text", "")), bool(event.get("interrupted")))
        elif kind == "timeline":
            cost: float | None = None
            close_turn: Callable[[], Any] | None = getattr(self.meter, "close_turn", None)
            if close_turn is not None:
                cost = float(close_turn().total)
            agent_text, interrupted = self._agent or (None, False)
            self.store.add_turn(self.session_id, int(event.get("turn", 0)), user_text=self._user_text,
                                agent_text=agent_text, interrupted=interrupted,
                                timeline=event.get("stages_ms", {}),
                                voice_to_voice_ms=event.get("voice_to_voice_ms"), cost_usd=cost)
            self._user_text, self._agent = None, None

    def audio(self, role: str, frame: AudioFrame) -> None:
        """Record a chunk of audio when recording was opted into (a no-op otherwise)."""
        if self.record_audio:
            self.store.add_audio(self.session_id, role, frame)

    def close(self) -> None:
        total: float | None = None
        session_cost = getattr(self.meter, "session_total", None)
        if session_cost is not None:
            total = float(session_cost() if callable(session_cost) else session_cost)
        self.store.end_session(self.session_id, total)

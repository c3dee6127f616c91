"""The Whisper decode workers' scheduling, with stand-in models: which decode gets the two-thread model, and when."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

from voxline.providers.whisper import FINAL, INTERIM, _Workers

WAIT_S = 10


@pytest.fixture
def workers() -> Iterator[_Workers[str]]:
    pool = _Workers(2, "narrow", "solo")
    yield pool
    pool.close()


def held(started: threading.Event, release: threading.Event) -> Callable[[str], str]:
    """A decode that says when it starts and runs until released; its result is the model it was given."""
    def decode(model: str) -> str:
        started.set()
        assert release.wait(WAIT_S)
        return model
    return decode


def test_a_final_alone_gets_the_solo_model_and_interims_never_do(workers: _Workers[str]) -> None:
    assert workers.submit(FINAL, lambda model: model).result(WAIT_S) == "solo"
    assert workers.submit(INTERIM, lambda model: model).result(WAIT_S) == "narrow"


def test_a_final_beside_a_running_decode_stays_on_one_thread(workers: _Workers[str]) -> None:
    started, release = threading.Event(), threading.Event()
    interim = workers.submit(INTERIM, held(started, release))
    assert started.wait(WAIT_S)
    final = workers.submit(FINAL, lambda model: model)
    assert final.result(WAIT_S) == "narrow"  # not held back by the interim either
    release.set()
    assert interim.result(WAIT_S) == "narrow"


def test_nothing_starts_beside_a_solo_decode(workers: _Workers[str]) -> None:
    started, release = threading.Event(), threading.Event()
    solo = workers.submit(FINAL, held(started, release))
    assert started.wait(WAIT_S)
    later_started = threading.Event()
    interim = workers.submit(INTERIM, held(later_started, threading.Event()))
    final = workers.submit(FINAL, lambda model: model)
    assert not later_started.wait(0.2) and not final.done()
    assert workers.active == 3
    interim.cancel()  # its caller gives up while it waits: never run
    release.set()
    assert solo.result(WAIT_S) == "solo"
    assert final.result(WAIT_S) == "solo"  # the cores are free again
    assert not later_started.is_set()
    deadline = time.monotonic() + WAIT_S
    while workers.active and time.monotonic() < deadline:  # the worker that held the interim lets go of it
        time.sleep(0.01)
    assert workers.active == 0


def test_a_burst_of_finals_runs_side_by_side_not_one_after_the_other() -> None:
    pool = _Workers(1, "narrow", "solo")
    try:
        started, release = threading.Event(), threading.Event()
        pool.submit(INTERIM, held(started, release))
        assert started.wait(WAIT_S)
        finals = [pool.submit(FINAL, lambda model: model) for _ in range(2)]
        release.set()
        assert [f.result(WAIT_S) for f in finals] == ["narrow", "solo"]  # the last one found nothing waiting
    finally:
        pool.close()


def test_a_failing_solo_decode_frees_the_cores(workers: _Workers[str]) -> None:
    def fail(model: str) -> str:
        raise RuntimeError(f"{model} failed")

    with pytest.raises(RuntimeError, match="solo failed"):
        workers.submit(FINAL, fail).result(WAIT_S)
    assert workers.submit(INTERIM, lambda model: model).result(WAIT_S) == "narrow"
    assert workers.submit(FINAL, lambda model: model).result(WAIT_S) == "solo"


def test_without_a_solo_model_finals_run_side_by_side() -> None:
    pool = _Workers(2, "narrow")
    try:
        started, release = threading.Event(), threading.Event()
        first = pool.submit(FINAL, held(started, release))
        assert started.wait(WAIT_S)
        assert pool.submit(FINAL, lambda model: model).result(WAIT_S) == "narrow"
        release.set()
        assert first.result(WAIT_S) == "narrow"
    finally:
        pool.close()

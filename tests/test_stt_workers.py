"""The Whisper decode workers' scheduling, with stand-in models: which decode gets the two-thread model, and when."""

from __future__ import annotations

import threading
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
    assert workers.active == 0


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

"""How the native thread pools wait: libgomp's (llama.cpp, CTranslate2) and numpy's BLAS.

llama.cpp and CTranslate2 split every operation of a forward pass over `n_threads` OpenMP threads, so one token of
SmolLM2 or one Whisper decoder step passes hundreds of barriers. Two ways of waiting are wrong on 2 shared cores:

- libgomp's default spins ~3 ms at each barrier before sleeping: idle helpers then hold a core for the whole
  time Piper or Whisper needs it (measured: LLM 1-6 tokens/s while spinning next to TTS, against 25-45).
- OMP_WAIT_POLICY=PASSIVE sleeps at once, and every barrier pays a wake-up; in a virtual machine that wake-up
  is an interrupt to a halted vCPU. Measured on this 2-core VM: llama.cpp decodes 26 tokens/s, not 66.

So helpers spin briefly (`SPIN_COUNT` iterations, ~0.1 ms: long enough to catch the next operation of the
same token, far shorter than the gap between tokens or turns) and then sleep. The policy is ACTIVE, bounded by
that count, not PASSIVE: libgomp cuts the spin further once it manages more threads than there are cores (two
Whisper workers of two threads each, say), to 1000 iterations under ACTIVE but to 100 under PASSIVE, and 100
is a sleep at nearly every barrier. Measured with two-thread Whisper decodes of 5-10 s clips: 378-428 ms median
with ACTIVE, 607-662 ms with PASSIVE at any spin count (slower than one thread, 478-559 ms). libgomp reads both
variables once, when the library is loaded; each llama.cpp context also runs on one thread of its own, since a
second calling thread means a second team of helpers.

numpy's OpenBLAS is the other spinner. After every call its helper threads busy-wait for a while (OpenBLAS's
THREAD_TIMEOUT, about 0.1 s here) before they sleep. The matrix products voxline gives numpy are small (the mel
filter bank of Whisper's and Smart Turn's front ends), but OpenBLAS still splits them over both cores, and the
helper then holds the second core through the Whisper encoder that follows the feature extraction. Measured on
the encoder of a 3 s clip (a 5 s window) on two CTranslate2 threads: 64 ms after the feature extraction against
33 ms without it. With OpenBLAS on one thread, the 3 s finals of `bench/stt.py --threads 2` take 164 ms median
against 240 ms in the same run (docs/stt.md). So voxline keeps BLAS to one thread, unless the user set a count.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

SPIN_COUNT = 10_000
_NATIVE = ("llama_cpp", "ctranslate2")
_BLAS_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "MKL_NUM_THREADS", "OMP_NUM_THREADS")


def configure_openmp(spin_count: int = SPIN_COUNT) -> None:
    """Set libgomp's wait policy for the native libraries loaded after this call (user settings win)."""
    loaded = [name for name in _NATIVE if name in sys.modules]
    if loaded:
        log.debug("%s already loaded: OpenMP keeps OMP_WAIT_POLICY=%s GOMP_SPINCOUNT=%s", ", ".join(loaded),
                  os.environ.get("OMP_WAIT_POLICY"), os.environ.get("GOMP_SPINCOUNT"))
    os.environ.setdefault("OMP_WAIT_POLICY", "ACTIVE")
    os.environ.setdefault("GOMP_SPINCOUNT", str(spin_count))


def limit_blas_threads() -> None:
    """Run numpy's BLAS on one thread from now on, process-wide (see the module docstring), unless the user
    chose a count through one of the variables OpenBLAS or MKL read."""
    chosen = [name for name in _BLAS_THREAD_VARIABLES if os.environ.get(name)]
    if chosen:
        log.debug("%s set: BLAS keeps the thread count it was given", chosen[0])
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")

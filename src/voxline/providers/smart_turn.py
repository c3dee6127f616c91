"""Smart Turn v3.2 (pipecat-ai, BSD-2): P(the user finished their turn) from the sound of the turn so far.

A Whisper-tiny encoder with a classifier head, int8, through onnxruntime. Input is the LAST 8 s of the turn at
16 kHz, zero-padded at the start to 8 s, normalised to zero mean and unit variance (the `do_normalize=True` of
its training code), as an (1, 80, 800) Whisper log-mel. The ONNX graph ends in a sigmoid, so its output is
already a probability. One model per process, shared by every session; a call costs tens of milliseconds in a
worker thread.

The graph is quantized as Quantize/DequantizeLinear pairs around float operators. onnxruntime fuses those into int8
kernels, which on x86 CPUs without VNNI multiply with 16-bit saturation (`vpmaddubsw`) and change the verdicts: on an
AVX2 EPYC, 24 read sentences scored 0.73 (median) when complete against 0.60 when cut mid-word, where the unfused
graph and the fused one on AVX-512 VNNI score 0.80-0.87 against 0.26-0.34. There the fusion is turned off
(`session.disable_quant_qdq`): the same arithmetic in float, ~13 % slower (116 against 103 ms a call).
"""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import numpy as np
import onnxruntime as ort

from voxline.audio.features import SAMPLE_RATE, WhisperFeatures, last_seconds_padded, zero_mean_unit_var
from voxline.audio.frame import AudioFrame
from voxline.errors import AudioError, ModelError
from voxline.models.store import ModelStore
from voxline.providers.native_threads import limit_blas_threads

WINDOW_S = 8.0


def int8_saturates(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether onnxruntime's fused int8 kernels saturate here: an x86 CPU without VNNI (or one whose flags are
    unknown). ARM's int8 dot products do not saturate."""
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686"):
        return False
    try:
        flags = next((line for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), "").split()
    except OSError:
        return True
    return not ({"avx512_vnni", "avx_vnni"} & set(flags))


class SmartTurnModel:
    """The `TurnModel` of voxline: completion probability of a user turn (mono 16 kHz preferred, others
    resampled)."""

    name = "smart-turn-v3.2"

    def __init__(self, model_path: str | Path | None = None, *, threads: int = 1) -> None:
        path = Path(model_path) if model_path else (
            ModelStore().path("smart-turn-v3") / "smart-turn-v3.2-cpu.onnx")
        if not path.is_file():
            raise ModelError(f"Smart Turn model not found at {path}; run `voxline models pull smart-turn-v3`")
        limit_blas_threads()  # the numpy front end's OpenBLAS helper would spin through the next Whisper decode
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if int8_saturates():
            opts.add_session_config_entry("session.disable_quant_qdq", "1")  # see the module docstring
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for corrupt files
            raise ModelError(f"cannot load Smart Turn model {path}: {exc}") from exc
        shape = self._session.get_inputs()[0].shape
        self._features = WhisperFeatures(n_mels=int(shape[1]) if isinstance(shape[1], int) else 80)

    def features(self, audio: AudioFrame) -> np.ndarray:
        """The (n_mels, 800) model input for the last 8 s of `audio`."""
        if audio.num_frames == 0:
            raise AudioError("Smart Turn needs some audio of the turn, got an empty frame")
        if audio.sample_rate != SAMPLE_RATE:
            audio = audio.resample(SAMPLE_RATE)
        x = zero_mean_unit_var(last_seconds_padded(audio.mono_float32(), WINDOW_S))
        return self._features.log_mel(x)

    def predict(self, audio: AudioFrame) -> float:
        """Blocking: P(turn complete) for the turn audio so far (end of the audio = now)."""
        feats = self.features(audio)[np.newaxis]
        (out,) = self._session.run(None, {"input_features": feats})
        return float(np.asarray(out).reshape(-1)[0])

    async def completion_probability(self, audio: AudioFrame) -> float:
        return await asyncio.to_thread(self.predict, audio)

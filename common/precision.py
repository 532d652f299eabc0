"""The float policy a training step computes in: half precision only where the hardware computes it natively.

On a GPU that is float16 with loss scaling (Keras' `mixed_float16`). On a CPU it is bfloat16, and only when
the CPU has bfloat16 arithmetic (AMX or AVX512-BF16 units): oneDNN then ran the demo's training steps 2.3-2.5x
and full-size ones 5-7x as fast as in float32 here (benchmarks/training_throughput.py times both), while a
CPU without them has to convert bfloat16 in software and has nothing to gain (not measured: no such CPU was
at hand). Variables, the loss, the optimizer and every BatchNormalization stay float32 under both policies,
and bfloat16 has float32's exponent range, so no loss scaling is needed.

The policy is a property of the step, not of the model: a model folder is always saved in float32
(`common.training.save_model_folder`), so a checkpoint trained on one machine loads and scores in full
precision on any other, as Shen's published float32 checkpoints do.
"""

from __future__ import annotations

from pathlib import Path

CPU_INFO = Path("/proc/cpuinfo")
NATIVE_BFLOAT16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(cpuinfo: Path = CPU_INFO) -> set[str]:
    """The instruction-set flags the kernel reports (empty where there is no /proc/cpuinfo)."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.partition(":")[2].split()}


def training_policy(mixed_precision: bool, gpus: int, cpuinfo: Path = CPU_INFO) -> str:
    """The Keras dtype policy for a training step: the profile's wish, granted where it is a speed-up."""
    if not mixed_precision:
        return "float32"
    if gpus:
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_flags(cpuinfo) & set(NATIVE_BFLOAT16_FLAGS) else "float32"

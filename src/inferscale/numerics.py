"""CPU numerics that do not depend on the machine's instruction set.

torch's CPU kernels are chosen per machine: ATen picks its vectorised kernels by the widest
instruction set it finds, MKL (every fp32 matmul on CPU) picks a code path per processor, and
oneDNN JIT-compiles for the newest ISA it finds. Each choice rounds differently, so the same
training on an AVX-512 machine and on an AVX2 one ends in other weights. The variables below fix
each choice to one that every x86-64 machine we run on offers. They are set, on x86-64 only, in
every process inferscale runs: the CLI process when the package is imported (before torch is),
and the training ranks through the launcher's environment. A value already in the environment
wins, and `INFERSCALE_CPU_NUMERICS=native` sets none of them: the machine's own (faster,
machine-dependent) kernels. Neither is part of the stage keys.

They only touch CPU kernels; GPU kernels are unaffected. The thread count is the other part of
CPU numerics (reductions are split by thread): training sets it from `sft.threads_per_process`,
generation from `generation.threads`.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from pathlib import Path

# The one place that names each setting. Why each value:
X86_PINS = {
    # ATen's own kernels (matmul epilogues, softmax, RMSNorm, SiLU, reductions, AdamW's foreach
    # ops) exist once per capability; unpinned, an AVX-512 machine runs the avx512 ones. AVX2 is
    # on every x86-64 machine we run on (checked below before it is set: torch does not check,
    # and an unsupported capability dies of an illegal instruction).
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL's conditional numerical reproducibility fixes its code branch. On non-Intel
    # processors MKL honours only AUTO and COMPATIBLE (AVX2 silently becomes AUTO: MKL_VERBOSE=1
    # prints CNR:AUTO on AMD), so COMPATIBLE (SSE2 without the approximate rcpps/rsqrtps) is the
    # one branch that runs the same code on Intel and AMD processors.
    "MKL_CBWR": "COMPATIBLE",
    # oneDNN's newest ISA. fp32 training and generation here run no oneDNN primitive
    # (ONEDNN_VERBOSE=1 prints none); bf16 matmuls and convolutions would.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
PIN_NAMES = tuple(X86_PINS)
# `portable` (the default): the pins above; `native`: none of them.
MODE_ENV = "INFERSCALE_CPU_NUMERICS"
MODES = ("portable", "native")

_X86_64 = {"x86_64", "amd64"}


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo, or None where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field):
            return line.partition(":")[2].strip()
    return None


def _cpu_flags() -> set[str] | None:
    """The CPU's feature flags, or None where they cannot be read."""
    flags = _cpuinfo("flags")
    return None if flags is None else set(flags.split())


def cpu_model() -> str:
    """The processor's name, for benchmark records."""
    return _cpuinfo("model name") or platform.machine()


def cpu_pins(env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The pins for this machine: all of them on x86-64 with AVX2 and FMA; MKL's and oneDNN's
    (which never need more than the machine has) on other x86-64 machines; none elsewhere (ARM
    wheels have no MKL, and ATen would warn about an x86 capability), nor where `env` asks for
    native numerics."""
    mode = env.get(MODE_ENV) or "portable"
    if mode not in MODES:
        raise ValueError(f"{MODE_ENV}={mode!r}: expected one of {', '.join(MODES)}")
    if mode == "native" or platform.machine().lower() not in _X86_64:
        return {}
    pins = dict(X86_PINS)
    flags = _cpu_flags()
    if flags is None or not {"avx2", "fma"} <= flags:
        del pins["ATEN_CPU_CAPABILITY"]
    return pins


def pinned_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the pins added under it: a value `env` already has wins."""
    return {**cpu_pins(env), **env}


def pin_this_process() -> None:
    """Set the pins in os.environ where unset. They take effect only if torch has run no CPU
    kernel yet (each library reads its variable once, at its first use)."""
    for name, value in cpu_pins().items():
        os.environ.setdefault(name, value)


def describe() -> dict:
    """What this process runs with: ATen's capability and the pinned variables as set."""
    import torch

    return {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {name: os.environ.get(name) for name in (MODE_ENV, *PIN_NAMES)},
    }

"""Where and how computation runs: the device, autocast precision and CPU threads.

Shared by prediction (``zoo run``) and training (``zoo train``).

Precision: ``runtime.amp: auto`` (the default) runs bf16 autocast only where the device
computes bf16 natively (a CUDA GPU with bf16, a CPU with AVX-512 BF16 or AMX, an Arm CPU
with BF16) and fp32 elsewhere: without those instructions oneDNN emulates bf16, and a
bf16 matmul on an AVX2-only CPU runs about 50x slower than in fp32.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError

AMP_CHOICES = ("auto", "none", "bf16", "fp16")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

BF16_INSTRUCTIONS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "sve_bf16": "SVE-BF16", "bf16": "BF16"}
"""CPU flags (``torch.cpu.get_capabilities()``) of instructions that compute bf16, and their names."""

# ONEDNN_MAX_CPU_ISA values that keep oneDNN below its bf16 instructions (it then emulates bf16)
_ONEDNN_ISAS_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class Bf16Support:
    """Whether a device computes bf16 natively, and the device as the messages name it."""

    native: bool
    device: str  # e.g. "CPU (AVX2)", "CPU (AVX512 with AVX512-BF16)", "GPU NVIDIA T4 (sm_75)"


def cpu_bf16_support(
    flags: Mapping[str, Any] | None = None, onednn_max_isa: str | None = None, onednn: bool | None = None
) -> Bf16Support:
    """Native bf16 on this CPU: a bf16 instruction, and oneDNN allowed to use it.

    ``flags`` defaults to ``torch.cpu.get_capabilities()``, ``onednn_max_isa`` to the
    ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) environment variable, ``onednn`` to
    ``torch.backends.mkldnn.is_available()``; tests pass them to stand for other CPUs.
    """
    if flags is None:  # torch releases before get_capabilities() report nothing: fp32 is the safe choice
        flags = torch.cpu.get_capabilities() if hasattr(torch.cpu, "get_capabilities") else {}
    if onednn_max_isa is None:
        onednn_max_isa = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or ""
    onednn = torch.backends.mkldnn.is_available() if onednn is None else onednn
    vector = next(
        (
            name
            for flag, name in (
                ("avx512_f", "AVX512"),
                ("avx2", "AVX2"),
                ("avx", "AVX"),
                ("sve", "SVE"),
                ("neon", "NEON"),
            )
            if flags.get(flag)
        ),
        str(flags.get("architecture", "unknown")),
    )
    bf16 = [name for flag, name in BF16_INSTRUCTIONS.items() if flags.get(flag)]
    words = vector + (f" with {', '.join(bf16)}" if bf16 else "")
    if bf16 and onednn_max_isa.upper() in _ONEDNN_ISAS_WITHOUT_BF16:
        return Bf16Support(False, f"CPU ({words}, limited to {onednn_max_isa} by ONEDNN_MAX_CPU_ISA)")
    if bf16 and not onednn:
        return Bf16Support(False, f"CPU ({words}, but this torch has no oneDNN)")
    return Bf16Support(bool(bf16), f"CPU ({words})")


def bf16_support(device: torch.device) -> Bf16Support:
    """Native bf16 on ``device`` (CUDA: bf16 without emulation; CPU: see :func:`cpu_bf16_support`)."""
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # older torch: no emulation fallback to rule out
            native = torch.cuda.is_bf16_supported()
        return Bf16Support(native, f"GPU {torch.cuda.get_device_name(device)} (sm_{major}{minor})")
    if device.type == "cpu":
        return cpu_bf16_support()
    return Bf16Support(False, f"{device.type} device")  # not measured here: fp32 is the safe choice


_warned: set[str] = set()


def resolve_amp(
    amp: str, device: torch.device, log: Callable[[str], None] | None = None, support: Bf16Support | None = None
) -> str:
    """The autocast precision to run, ``none``, ``bf16`` or ``fp16``, for the setting ``amp``.

    ``auto`` is ``bf16`` where ``device`` computes it natively, else ``none`` (fp32). An
    explicit ``bf16`` on a device without native bf16 warns once (it runs, slower than fp32).
    ``log`` receives one line saying what was chosen and why; ``support`` stands for the
    device's (tests).
    """
    if amp not in AMP_CHOICES:
        raise ConfigError(f"runtime.amp: {amp!r} is not a precision; use one of {', '.join(AMP_CHOICES)}")
    chosen, reason = amp, ""
    if amp in ("auto", "bf16"):
        support = support or bf16_support(device)
        if amp == "auto":
            chosen = "bf16" if support.native else "none"
            verdict = "computes bf16 natively" if support.native else "has no native bf16"
            reason = f": this {support.device} {verdict}"
        elif not support.native and support.device not in _warned:
            _warned.add(support.device)
            print(
                f"warning: runtime.amp is bf16 but this {support.device} has no native bf16: bf16 runs slower "
                "than fp32 here; use --amp auto or none",
                file=sys.stderr,
            )
    if log is not None:
        log(f"precision: {'fp32' if chosen == 'none' else chosen + ' autocast'} (runtime.amp {amp}{reason})")
    return chosen


def autocast(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in {auto, none, bf16, fp16} (``auto``: see :func:`resolve_amp`)."""
    if amp == "auto":
        amp = resolve_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"runtime.device: {name!r} is not a device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device: {name!r} asked for, but no CUDA device is available; use --device cpu")
    return device

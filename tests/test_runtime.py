"""Precision that fits the machine: `runtime.amp: auto` and the bf16 warning."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from zoo_core import runtime
from zoo_core.errors import ConfigError
from zoo_core.pipeline.schema import RuntimeSpec
from zoo_core.runtime import Bf16Support, autocast, cpu_bf16_support, resolve_amp

CPU = torch.device("cpu")
CUDA = torch.device("cuda")  # never touched: the tests pass the device's support
X86_AVX2 = {"architecture": "x86_64", "avx": True, "avx2": True, "avx512_f": False, "avx512_bf16": False}
X86_AVX512 = dict(X86_AVX2, avx512_f=True)  # e.g. Skylake-SP: AVX-512 but no bf16 instruction
X86_AVX512_BF16 = dict(X86_AVX512, avx512_bf16=True)
X86_AMX = dict(X86_AVX512, amx_bf16=True)
ARM = {"architecture": "arm64", "neon": True, "bf16": False}


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    monkeypatch.setattr(runtime, "_warned", set())


@pytest.mark.parametrize(
    "flags, native, words",
    [
        (X86_AVX2, False, "CPU (AVX2)"),
        (X86_AVX512, False, "CPU (AVX512)"),
        (X86_AVX512_BF16, True, "CPU (AVX512 with AVX512-BF16)"),
        (X86_AMX, True, "CPU (AVX512 with AMX-BF16)"),
        (ARM, False, "CPU (NEON)"),
        (dict(ARM, bf16=True), True, "CPU (NEON with BF16)"),
        ({"architecture": "riscv64"}, False, "CPU (riscv64)"),
    ],
)
def test_cpu_support_from_its_flags(flags, native, words):
    assert cpu_bf16_support(flags, onednn_max_isa="", onednn=True) == Bf16Support(native, words)


def test_onednn_limited_below_bf16_is_not_native():
    limited = cpu_bf16_support(X86_AVX512_BF16, onednn_max_isa="AVX2", onednn=True)
    assert not limited.native and "limited to AVX2 by ONEDNN_MAX_CPU_ISA" in limited.device
    assert not cpu_bf16_support(X86_AVX512_BF16, onednn_max_isa="avx512_core", onednn=True).native
    assert cpu_bf16_support(X86_AVX512_BF16, onednn_max_isa="AVX512_CORE_AMX", onednn=True).native
    assert not cpu_bf16_support(X86_AVX512_BF16, onednn_max_isa="", onednn=False).native


@pytest.mark.parametrize(
    "support, chosen",
    [
        (Bf16Support(True, "GPU A100 (sm_80)"), "bf16"),
        (Bf16Support(False, "GPU T4 (sm_75)"), "none"),
        (cpu_bf16_support(X86_AVX512_BF16, "", True), "bf16"),
        (cpu_bf16_support(X86_AVX2, "", True), "none"),
    ],
)
def test_auto_picks_bf16_only_where_native(support, chosen, capsys):
    lines = []
    device = CUDA if support.device.startswith("GPU") else CPU
    assert resolve_amp("auto", device, lines.append, support=support) == chosen
    expected = "bf16 autocast" if chosen == "bf16" else "fp32"
    assert lines == [
        f"precision: {expected} (runtime.amp auto: this {support.device} "
        + ("computes bf16 natively)" if chosen == "bf16" else "has no native bf16)")
    ]
    assert capsys.readouterr().err == ""  # auto never warns


def test_explicit_settings_are_kept_and_bf16_without_native_support_warns_once(capsys):
    avx2 = cpu_bf16_support(X86_AVX2, "", True)
    for setting in ("none", "fp16"):
        assert resolve_amp(setting, CUDA) == setting  # no device query at all (there is no CUDA here)
    assert resolve_amp("bf16", CPU, support=avx2) == "bf16"
    assert resolve_amp("bf16", CPU, support=avx2) == "bf16"
    err = capsys.readouterr().err
    assert err.count("warning:") == 1
    assert "this CPU (AVX2) has no native bf16: bf16 runs slower than fp32 here; use --amp auto or none" in err
    assert resolve_amp("bf16", CPU, support=cpu_bf16_support(X86_AVX512_BF16, "", True)) == "bf16"
    assert capsys.readouterr().err == ""
    with pytest.raises(ConfigError, match="'int8' is not a precision"):
        resolve_amp("int8", CPU)


def test_auto_is_the_default():
    assert RuntimeSpec().amp == "auto"


def _cpuinfo_flags() -> set[str]:
    path = Path("/proc/cpuinfo")
    if not path.exists():
        pytest.skip("no /proc/cpuinfo to compare with")
    line = next((ln for ln in path.read_text().splitlines() if ln.startswith(("flags", "Features"))), "")
    return set(line.partition(":")[2].split())


def test_this_cpu_agrees_with_proc_cpuinfo(monkeypatch):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    flags = _cpuinfo_flags()
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16", "svebf16"}) and torch.backends.mkldnn.is_available()
    assert runtime.bf16_support(CPU).native == native
    a = torch.randn(8, 8)
    with autocast(CPU, "auto"):
        assert (a @ a).dtype == (torch.bfloat16 if native else torch.float32)
    with autocast(CPU, "none"):
        assert (a @ a).dtype == torch.float32


def test_onednn_limited_to_avx2_in_a_real_process():
    """The AVX2 path without an AVX2-only machine: oneDNN limited by its own variable, in a fresh process."""
    code = (
        "import torch\nfrom zoo_core.runtime import resolve_amp\n"
        "print(resolve_amp('auto', torch.device('cpu'), print))\nresolve_amp('bf16', torch.device('cpu'))\n"
        "resolve_amp('bf16', torch.device('cpu'))\n"
    )
    env = dict(os.environ, ONEDNN_MAX_CPU_ISA="AVX2")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "none" and lines[0].startswith("precision: fp32 (runtime.amp auto: this CPU (")
    assert result.stderr.count("warning: runtime.amp is bf16") == 1 and "ONEDNN_MAX_CPU_ISA" in result.stderr


def test_zoo_run_says_which_precision_it_chose(zoo_cli, tiny_model_dir, synthetic_vspw, tmp_path):
    pipeline = {
        "data": {"root": str(synthetic_vspw.root), "split": "val", "max_videos": 1},
        "models": [{"name": "tiny", "weights": str(tiny_model_dir)}],
        "runtime": {"progress": False},
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    chosen = resolve_amp("auto", CPU)
    words = "bf16 autocast" if chosen == "bf16" else "fp32"
    result = zoo_cli("run", path, "--out", tmp_path / "auto")
    assert result.exit_code == 0, result.output
    assert f"precision: {words} (runtime.amp auto: this CPU (" in result.output
    result = zoo_cli("run", path, "--out", tmp_path / "none", "--amp", "none")
    assert result.exit_code == 0 and "precision: fp32 (runtime.amp none)" in result.output

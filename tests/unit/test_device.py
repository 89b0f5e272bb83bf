"""The one place that picks devices and precision: the bfloat16 detector itself, on this CPU and on others."""

from __future__ import annotations

import pytest
import torch

from napari_wavegms.core import device as device_mod
from napari_wavegms.core.device import CPU_BF16_ENV, autocast_dtype, cpu_flags_compute_bf16, native_bf16

CPU = torch.device("cpu")
# Flags lines as /proc/cpuinfo writes them (shortened): an AVX2 EPYC, an AVX-512 Xeon without BF16
# (Skylake-SP: PyTorch's oneDNN says "bf16 supported" there, and converts in software) and a Zen 4.
AVX2 = "fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2"
AVX512_EMULATED = AVX2 + " avx512f avx512dq avx512cd avx512bw avx512vl avx512_vnni"
AVX512_BF16 = AVX512_EMULATED + " avx512_bf16 avx512_vbmi2"


def _this_cpu_flags() -> set[str]:
    """Read independently of the engine: the first flags line of /proc/cpuinfo."""
    with open("/proc/cpuinfo") as f:
        return set(next(line for line in f if line.startswith("flags")).split(":", 1)[1].split())


@pytest.fixture
def torch_says_bf16(monkeypatch):
    """PyTorch's own check answering yes, as it does on every AVX-512 CPU."""
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True, raising=False)


def test_avx512_that_emulates_bf16_is_not_native(torch_says_bf16, monkeypatch):
    for flags, native in ((AVX2, False), (AVX512_EMULATED, False), (AVX512_BF16, True)):
        monkeypatch.setattr(device_mod, "_cpu_flags", lambda flags=flags: frozenset(flags.split()))
        assert cpu_flags_compute_bf16(flags) is native
        assert native_bf16(CPU) is native, flags
        assert autocast_dtype(CPU, "auto") is (torch.bfloat16 if native else None)


def test_flags_without_pytorch_kernels_are_not_enough(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    monkeypatch.setattr(device_mod, "_cpu_flags", lambda: frozenset(AVX512_BF16.split()))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False, raising=False)
    assert not native_bf16(CPU)


@pytest.mark.skipif(not __import__("os").path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo")
def test_the_detector_on_this_cpu(monkeypatch):
    monkeypatch.delenv(CPU_BF16_ENV, raising=False)
    flags = _this_cpu_flags()
    expected = bool(flags & {"avx512_bf16", "amx_bf16"}) and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    assert native_bf16(CPU) is expected
    assert autocast_dtype(CPU, "auto") is (torch.bfloat16 if expected else None)
    assert autocast_dtype(CPU, "fp32") is None  # a forced choice does not ask the detector


def test_the_environment_overrides_the_detector(monkeypatch):
    monkeypatch.setenv(CPU_BF16_ENV, "1")
    assert native_bf16(CPU) and autocast_dtype(CPU, "auto") is torch.bfloat16
    monkeypatch.setenv(CPU_BF16_ENV, "0")
    assert not native_bf16(CPU) and autocast_dtype(CPU, "auto") is None
    monkeypatch.setenv(CPU_BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="WAVEGMS_CPU_BF16='maybe'"):
        native_bf16(CPU)
    assert not native_bf16(torch.device("meta"))  # neither CPU nor CUDA: never bfloat16 autocast

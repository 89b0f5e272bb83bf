"""The one place that decides which device runs the model."""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING

from napari_wavegms.core.dist import placement

if TYPE_CHECKING:  # torch loads when a device is asked for: the CLI's --help and argument checks stay quick
    import torch


def available_devices() -> list[str]:
    """``auto`` followed by the devices this machine can actually use (``cuda:N``, ``mps``, ``cpu``)."""
    import torch

    names = ["auto"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        names.append("mps")
    return [*names, "cpu"]


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N`` / ``mps`` into a usable device, or explain why not.

    ``auto`` prefers CUDA, then Apple's MPS, then the CPU. Under ``torchrun`` (``LOCAL_RANK`` set)
    ``auto`` and ``cuda`` pick this process's GPU.
    """
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    local_rank = placement().local_rank
    if name == "auto":
        if torch.cuda.is_available():
            name = "cuda"
        elif "mps" in available_devices():
            name = "mps"
        else:
            return torch.device("cpu")
    if name == "cuda" and local_rank is not None:
        name = f"cuda:{local_rank}"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"unknown device {name!r}; available: {', '.join(available_devices())}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {name!r} asked for, but this PyTorch has no CUDA (torch {torch.__version__}); "
                f"available: {', '.join(available_devices())}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r} does not exist; available: {', '.join(available_devices())}")
    elif device.type == "mps" and "mps" not in available_devices():
        raise ValueError(f"device 'mps' is not available here; available: {', '.join(available_devices())}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unsupported device {name!r}; available: {', '.join(available_devices())}")
    return device


def describe(device: torch.device) -> str:
    """A short human name for the device in use, e.g. ``cuda:0 (NVIDIA H100)`` or ``cpu (2 threads)``."""
    import torch

    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)


# ---------------------------------------------------------------- precision
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


#: ``1`` or ``0`` overrides what :func:`native_bf16` finds on this CPU: to test the other precision path on
#: any machine, or to opt a CPU the detector does not know (not Linux) into bfloat16.
CPU_BF16_ENV = "WAVEGMS_CPU_BF16"
_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that compute bfloat16 (Linux /proc/cpuinfo names)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (CUDA Ampere+, CPUs with AVX-512 BF16 or AMX).

    On a CPU without it PyTorch emulates bfloat16 and a convolution runs about 20× *slower* than in
    float32 (measured on an AVX2 EPYC, ``docs/results.md``), so ``auto`` must not pick it there.
    PyTorch's own check (``torch.ops.mkldnn._is_mkldnn_bf16_supported``) is not enough: it says yes on
    every AVX-512 CPU, which converts bfloat16 in software. The CPU's own flags decide
    (:func:`cpu_flags_compute_bf16`), and PyTorch's check must agree (a build without oneDNN has no fast
    kernels either). :data:`CPU_BF16_ENV` (``1``/``0``) overrides the answer for a CPU.
    """
    import torch

    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type != "cpu":
        return False
    forced = os.environ.get(CPU_BF16_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    if forced not in ("", "auto"):
        raise ValueError(f"{CPU_BF16_ENV}={forced!r}: use 1 (bfloat16), 0 (float32) or leave it unset")
    return cpu_flags_compute_bf16(_cpu_flags()) and _torch_bf16_kernels()


def cpu_flags_compute_bf16(flags: set[str] | str) -> bool:
    """Whether a CPU with these flags (a ``/proc/cpuinfo`` flags line or its set) computes bfloat16."""
    if isinstance(flags, str):
        flags = set(flags.split())
    return any(flag in flags for flag in _BF16_FLAGS)


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    """This CPU's feature flags (Linux); empty elsewhere, where ``auto`` stays with float32."""
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def _torch_bf16_kernels() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for inference with ``precision`` on ``device``; ``None`` means float32.

    ``auto``: float16 on CUDA (the fastest there), bfloat16 on a CPU that has it natively, float32
    elsewhere (Apple MPS included). ``fp32``/``bf16``/``fp16`` force one; float16 only exists on CUDA/MPS.
    """
    import torch

    precision = (precision or "auto").lower()
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if device.type == "cpu" and native_bf16(device) else None
    if precision == "fp16" and device.type not in ("cuda", "mps"):
        raise ValueError(f"float16 needs a CUDA or MPS device, not {device.type}; use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32`` / ``bf16`` / ``fp16``: how a choice of :func:`autocast_dtype` reads in a widget or a log."""
    import torch

    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]

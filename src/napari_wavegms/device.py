"""The one place that decides which device runs the model."""

from __future__ import annotations

import torch


def available_devices() -> list[str]:
    """``auto`` followed by the devices this machine can actually use (``cuda:N``, ``mps``, ``cpu``)."""
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
    import os

    if isinstance(name, torch.device):
        name = str(name)
    name = (name or "auto").strip().lower()
    local_rank = os.environ.get("LOCAL_RANK")
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
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return str(device)

"""Device choice: the only place that decides 'GPU when there is one, else CPU'."""
from __future__ import annotations

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → ``cuda`` if available, else ``mps`` if available, else ``cpu``; other names as given."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for, but torch sees no CUDA GPU on this machine")
    return device


def available_devices() -> list[str]:
    out = ["cpu"]
    if torch.cuda.is_available():
        out = [f"cuda:{i}" for i in range(torch.cuda.device_count())] + out
    return out

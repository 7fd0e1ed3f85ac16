"""Provenance recorded beside every result: package versions, git revision, time, host device."""
from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import subprocess
from pathlib import Path

__version__ = "0.1.0"

_PACKAGES = ("torch", "torchvision", "numpy", "safetensors")


def package_versions() -> dict[str, str]:
    out = {"rst": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def git_revision() -> str:
    """The git revision of the checkout ``rst`` runs from (``+dirty`` if modified), else ``unknown``."""
    root = Path(__file__).resolve().parents[2]          # the checkout: rst/runtime/provenance.py
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: str | None = None) -> dict:
    """Versions, git revision, time, device, thread count and whether deterministic algorithms were on."""
    import torch
    return {"versions": package_versions(), "git_revision": git_revision(),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            **({"device": device} if device else {})}

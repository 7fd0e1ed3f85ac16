"""Device choice (the only place that decides 'GPU when there is one, else CPU') and deterministic mode."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

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


# cuBLAS reads this when it creates a handle: ":4096:8" = 8 workspaces of 4 MiB per handle (the
# smaller ":16:8" also works, slower); without it cuBLAS matmuls may differ from run to run.
CUBLAS_WORKSPACE_CONFIG = ":4096:8"


@contextlib.contextmanager
def deterministic(enabled: bool = True, *, warn_only: bool = False) -> Iterator[None]:
    """Run the body with PyTorch's deterministic settings; restore the previous ones afterwards.

    Sets ``torch.use_deterministic_algorithms(True, warn_only=warn_only)``,
    ``$CUBLAS_WORKSPACE_CONFIG`` (to :data:`CUBLAS_WORKSPACE_CONFIG` when unset),
    ``torch.backends.cudnn.deterministic = True`` and ``torch.backends.cudnn.benchmark = False``.
    ``enabled=False`` changes nothing (so callers can pass a flag through). Enter it before the
    first CUDA matmul of the process: cuBLAS reads its workspace setting when a handle is created.

    What it gives: on a CPU, nothing new (this code's CPU runs are already bit-reproducible for a
    given seed and thread count); on CUDA, the same bits from run to run on the same GPU model,
    driver and PyTorch build, for the operations that have a deterministic kernel. What it costs:
    cuDNN's deterministic convolution algorithms and no autotuning (slower convolutions, not
    measured here: no GPU in this workplace), and ``torch.empty`` memory filled with NaN.

    Operations without a deterministic CUDA kernel raise a RuntimeError naming the kernel (or,
    with ``warn_only=True``, warn and run nondeterministically, so the run is NOT reproducible).
    The one in this code is the backward of adaptive average pooling to a size other than 1:
    ``fmnist_conv4``'s 7x7 -> 4x4 pooling (``adaptive_avg_pool2d_backward_cuda``), reached by every
    attack and every update, so a CUDA search of that architecture refuses to run under this
    setting. The ResNets' and WRN's global pooling (to 1x1) is computed as a mean, which is
    deterministic.

    Example:
        >>> with deterministic():
        ...     result = rst.search.loop.run_search(cfg, device="cuda")
    """
    if not enabled:
        yield
        return
    previous = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
                torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
                os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    torch.use_deterministic_algorithms(True, warn_only=warn_only)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    if previous[4] is None:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG
    try:
        yield
    finally:
        algorithms, algorithms_warn_only, cudnn_deterministic, cudnn_benchmark, cublas = previous
        torch.use_deterministic_algorithms(algorithms, warn_only=algorithms_warn_only)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn_deterministic, cudnn_benchmark
        if cublas is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)

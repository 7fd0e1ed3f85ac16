"""Speed settings of a fit: precision, memory format and ``torch.compile``, chosen per device.

None of them changes the maths beyond numerics. ``precision="auto"`` (the default of
:class:`rst.search.loop.SearchConfig`) picks, for the device the fit runs on:

=============================  ==========  =============  =========
device                         precision   channels_last  compile
=============================  ==========  =============  =========
CPU with native bf16 (AVX-512  bf16        yes            no
BF16 / AMX)
other CPUs                     fp32        yes            no
CUDA with bf16 (Ampere+)       bf16        yes            no
other CUDA, MPS                fp32        no             no
=============================  ==========  =============  =========

``torch.compile`` stays off under "auto": measured on the 2-core CPU here it did not pay for its
compilation within a ticket's search (README, "Speed"); ask for it with ``compile=True``.
Explicit ``precision="fp32"`` / ``"bf16"`` keep ``channels_last`` and ``compile`` as given;
``"bf16"`` on a device without bf16 support is refused (``ValueError``), never silently ignored.

bf16 is autocast (``torch.autocast``): convolutions and matrix products run in bf16, losses are
taken in fp32, the learned tensors (scores, weights) and BN statistics stay fp32. Evaluation
attacks run in fp32 unless asked otherwise (``rst.evaluation.metrics.robust_accuracy(..., precision=)``).

    >>> s = resolve_speed("auto", channels_last=False, compile=False, device=torch.device("cpu"))
    >>> s.to_dict()      # {'precision': 'bf16', 'channels_last': True, 'compile': False, 'reason': ...}
    >>> with s.autocast(torch.device("cpu")):
    ...     logits = model(x)
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import asdict, dataclass

import torch

PRECISIONS = ("auto", "fp32", "bf16")


@functools.lru_cache(maxsize=None)
def _cpu_bf16_native() -> bool:
    """True when this CPU has native bf16 arithmetic (AVX-512 BF16 or AMX) and a bf16 conv runs."""
    flags = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if not any(f is not None and f() for f in flags):
        return False
    try:                                       # a guarded trial: the kernels exist in this build
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = torch.nn.functional.conv2d(torch.ones(1, 1, 4, 4), torch.ones(1, 1, 3, 3))
        return out.dtype == torch.bfloat16
    except RuntimeError:
        return False


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs natively (fast) on ``device``."""
    if device.type == "cpu":
        return _cpu_bf16_native()
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return False


@dataclass(frozen=True)
class Speed:
    """The resolved speed settings of one fit (what ``precision="auto"`` chose, and why)."""
    precision: str                 # "fp32" | "bf16"
    channels_last: bool
    compile: bool
    reason: str = "as configured"

    def autocast(self, device: torch.device):
        """bf16 autocast on ``device`` when ``precision == "bf16"``, else a no-op context."""
        if self.precision != "bf16":
            return contextlib.nullcontext()
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)

    def to_dict(self) -> dict:
        return asdict(self)


FP32 = Speed("fp32", False, False, "fp32 (evaluation default)")


def eval_channels_last(device: torch.device) -> bool:
    """Whether fp32 evaluation attacks on ``device`` run the model in channels_last: on a CPU,
    where it is faster (measured: fp32 forward+backward of Conv-4, 1 thread, 1.14x; forward 1.37x)
    and changes nothing but the memory layout (the arithmetic is fp32 as before)."""
    return torch.device(device).type == "cpu"


@contextlib.contextmanager
def memory_format(model: torch.nn.Module, channels_last: bool):
    """Inside the block, ``model``'s 4-d parameters and buffers are channels_last; on exit they
    get back the layout they had (``channels_last=False``: nothing happens)."""
    four_d = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]   # (1 channel: both layouts)
    if not channels_last or not four_d:
        yield model
        return
    was_cl = not four_d[0].is_contiguous()
    model.to(memory_format=torch.channels_last)
    try:
        yield model
    finally:
        if not was_cl:
            model.to(memory_format=torch.contiguous_format)


def is_subnormal(t: torch.Tensor) -> torch.Tensor:
    """Bool tensor: where floating ``t`` is subnormal (non-zero, |v| below ``torch.finfo(dtype).tiny``,
    1.2e-38 in fp32)."""
    return (t != 0) & (t.abs() < torch.finfo(t.dtype).tiny)


@torch.no_grad()
def flush_subnormal_(t: torch.Tensor) -> torch.Tensor:
    """Set the subnormal values of ``t`` (:func:`is_subnormal`) to zero, in place; returns ``t``.
    Integer tensors are left as they are."""
    if t.is_floating_point():
        t.masked_fill_(is_subnormal(t), 0.0)
    return t


def flush_subnormal_bn_stats_(model: torch.nn.Module) -> torch.nn.Module:
    """Zero the subnormal BatchNorm running statistics of ``model``, in place; returns it.

    A channel whose input dies during a search (its kernel masked out) keeps running statistics that
    decay by ``1 - momentum`` per step into the subnormal range. In eval mode such a channel outputs
    subnormal activations, and fp32 convolutions on a CPU slow down about 13x on them (measured: the
    48->48 conv of the width-1.5 Conv-4's keep-0.2 ticket, 1 thread, batch 256: 1.36 s, 0.11 s once
    flushed; the whole forward 3.3x). Zeroing them moves such an activation by less than 1e-37:
    numerics only. :func:`rst.network.masks.apply_ticket`, :class:`rst.evaluation.r2s.R2S` and every epoch of a fit
    (before validation and the checkpoint) call it."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            for buf in (m.running_mean, m.running_var):
                if buf is not None:
                    flush_subnormal_(buf)
    return model


def resolve_speed(precision: str, *, channels_last: bool, compile: bool, device: torch.device,
                  allow_channels_last: bool = True) -> Speed:
    """The settings a fit on ``device`` runs with (see the module docstring for the ``auto`` table).

    ``allow_channels_last=False`` for models that cannot take it (a ``TicketBatch``: vmap stacks
    5-d weights); ``channels_last=True`` is then refused.
    """
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if channels_last and not allow_channels_last:
        raise ValueError("channels_last is not supported for this model (a TicketBatch stacks 5-d weights)")
    if precision == "auto":
        bf16 = bf16_supported(device)
        cl = allow_channels_last and (device.type == "cpu" or bf16)
        why = (f"auto on {device.type}: " + ("native bf16" if bf16 else "no native bf16, fp32")
               + (", channels_last" if cl else ""))
        return Speed("bf16" if bf16 else "fp32", cl, bool(compile), why)
    if precision == "bf16" and not bf16_supported(device):
        what = "this CPU has no native bf16 (AVX-512 BF16 / AMX)" if device.type == "cpu" else \
            f"{device} has no bf16 support"
        raise ValueError(f"precision='bf16' asked for, but {what}; use precision='fp32' or 'auto'")
    return Speed(precision, bool(channels_last), bool(compile))


__all__ = ["FP32", "PRECISIONS", "Speed", "bf16_supported", "eval_channels_last", "flush_subnormal_",
           "flush_subnormal_bn_stats_", "is_subnormal", "memory_format", "resolve_speed"]

"""AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", arXiv:2003.01690) through its authors' implementation
(the ``pyautoattack`` package).

Threat model: L-inf (or L2 / L1) ball of radius ``eps`` in [0, 1] pixel space; the model normalises
its inputs itself. Versions: "standard" (APGD-CE, APGD-T, FAB-T, Square), "plus", "rand" (APGD-CE
and APGD-DLR with EOT over 20 draws, for randomised defences such as R2S), "custom" (``attacks``).

AutoAttack prints and logs as it goes and seeds torch's *global* RNG; here its log is captured into
a string and the global RNG state is restored afterwards. The model runs in eval mode and its mode
is restored.

    >>> res = autoattack_accuracy(model, x, y, eps=8/255)                   # standard version
    >>> res = autoattack_accuracy(model, x, y, eps=0.1, version="custom", attacks=["apgd-ce"])
    >>> res["clean"], res["robust"], print(res["log"])
"""
from __future__ import annotations

import contextlib
import io
import logging
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from .model_modes import model_mode
from .per_image import encode_per_image
from .suite import EvalAttack, correct_matrix
from rst.network.masked import cached_masks
from rst.runtime.speed import eval_channels_last, memory_format

VERSIONS = ("standard", "plus", "rand", "custom")
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t")


@contextlib.contextmanager
def _captured_log(buffer: io.StringIO):
    """AutoAttack's logger, prints and warnings go into ``buffer`` (and nowhere else)."""
    logger = logging.getLogger("auto-attack")
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    old_level, old_propagate = logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(buffer):
            warnings.simplefilter("always")
            yield
        for w in caught:
            buffer.write(f"WARNING {w.category.__name__}: {w.message}\n")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.propagate = old_propagate


def autoattack_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                        version: str = "standard", batch_size: int = 256, seed: int = 0,
                        attacks: Sequence[str] | None = None, n_queries: int | None = None,
                        n_target_classes: int | None = None, n_iter: int | None = None
                        ) -> tuple[torch.Tensor, str]:
    """AutoAttack's adversarial examples ``(x_adv on x's device, log text)``.

    As AutoAttack does, an example is replaced only where one of its attacks fooled the model
    (for a randomised model: on the draw it saw). ``n_queries`` overrides Square's query budget;
    ``n_target_classes`` the number of target classes of APGD-T (AutoAttack standard: 9); ``n_iter``
    the iterations of APGD-CE / APGD-T (AutoAttack standard: 100).
    """
    from pyautoattack import AutoAttack

    if version not in VERSIONS:
        raise ValueError(f"version must be one of {VERSIONS}, got {version!r}")
    if attacks is not None and version != "custom":
        raise ValueError("attacks=... needs version='custom'")
    if version == "custom":
        attacks = list(attacks or [])
        unknown = [a for a in attacks if a not in ATTACK_NAMES]
        if not attacks or unknown:
            raise ValueError(f"version='custom' needs attacks from {ATTACK_NAMES}, got {attacks}")
    device = next(model.parameters()).device
    buffer = io.StringIO()
    fork = [device] if device.type == "cuda" else []
    # the masks are fixed during the attack: w * mask once (rst.network.masked.cached_masks), not per forward;
    # on a CPU the network runs channels_last (rst.runtime.speed.eval_channels_last: layout only, still fp32)
    with model_mode(model, False), memory_format(model, eval_channels_last(device)), cached_masks(model), \
            torch.random.fork_rng(devices=fork), _captured_log(buffer):
        torch.manual_seed(seed)
        adversary = AutoAttack(model, norm=norm, eps=eps, version=version, device=device, seed=seed,
                               attacks=attacks if version == "custom" else None)
        if n_queries is not None:
            adversary.square.n_queries = int(n_queries)
        if n_target_classes is not None:
            adversary.apgd_targeted.n_target_classes = int(n_target_classes)
        if n_iter is not None:
            for a in (adversary.apgd, adversary.apgd_targeted):
                a.n_iter = a.n_iter_orig = int(n_iter)
                a.n_iter_2, a.n_iter_min = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
                a.size_decr = max(int(0.03 * n_iter), 1)
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
    return x_adv.detach(), buffer.getvalue()


@dataclass(eq=False)
class AutoAttackEval(EvalAttack):
    """AutoAttack's examples (:func:`autoattack_examples`) as an evaluation attack of a suite.

    ``whole_set``: given all images at once, AutoAttack batching them by ``batch_size``; else one call
    per batch (``batch_size`` None: the batch). ``seed_per_batch``: batch ``i`` is attacked with seed
    ``seed + i``. ``reseed``: a switching model's draws restart from ``seed`` at each pass. The log of
    every call is appended to ``logs``.
    """
    eps: float
    version: str = "custom"
    attacks: Sequence[str] | None = None
    norm: str | None = None
    seed: int = 0
    seed_per_batch: bool = False
    batch_size: int | None = None
    whole_set: bool = False
    reseed: bool = False
    n_queries: int | None = None
    n_target_classes: int | None = None
    n_iter: int | None = None
    name: str = "autoattack"
    description: str = ""
    logs: list[str] = field(default_factory=list)

    def describe(self, model: nn.Module | None = None) -> str:
        return self.description or f"AutoAttack {self.version} ({', '.join(self.attacks or [])}) eps={self.eps:.4g}"

    @contextlib.contextmanager
    def session(self, model: nn.Module) -> Iterator[None]:
        if self.reseed and hasattr(model, "reseed"):
            model.reseed(self.seed)
        yield

    def examples(self, model, x, y, batch_index=0):
        # only the options that are set: a caller's functools.partial of autoattack_examples keeps its own
        options = {k: v for k, v in (("norm", self.norm), ("n_queries", self.n_queries),
                                     ("n_target_classes", self.n_target_classes), ("n_iter", self.n_iter))
                   if v is not None}
        if self.attacks is not None:
            options["attacks"] = list(self.attacks)
        x_adv, log = autoattack_examples(model, x, y, eps=self.eps, version=self.version,
                                         batch_size=self.batch_size or len(x),
                                         seed=self.seed + batch_index if self.seed_per_batch else self.seed, **options)
        self.logs.append(log)
        return x_adv


def autoattack_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
                        version: str = "standard", batch_size: int = 256, seed: int = 0,
                        attacks: Sequence[str] | None = None, n_queries: int | None = None) -> dict:
    """Clean and AutoAttack robust accuracy (Croce & Hein 2020, arXiv:2003.01690).

    Arguments:
        model (nn.Module): returns logits; inputs in [0, 1]. Evaluated in eval mode (mode restored).
            A member-switching model (an ``rst.evaluation.r2s.R2S``) is scored exactly: accuracies are the mean
            over its members of each member's accuracy on AutoAttack's examples.
        x (Tensor): (N, C, H, W) in [0, 1]. y (Tensor): (N,).
        eps (float): radius. norm (str): "Linf", "L2" or "L1". (Default: "Linf")
        version (str): "standard", "plus", "rand" (randomised defences: EOT=20) or "custom".
        batch_size (int): AutoAttack's batch size. (Default: 256)
        seed (int): AutoAttack's seed (global RNG restored afterwards). (Default: 0)
        attacks (list[str] | None): with version="custom", e.g. ``["apgd-ce", "square"]``.
        n_queries (int | None): Square's query budget (default: AutoAttack's 5000).

    Returns:
        ``{"clean", "robust", "version", "attacks", "n_images", "eps", "norm", "seed", "robust_per_image",
        "log"}``; ``robust_per_image`` is a string of "0"/"1" (survived), one per image (None for a
        member-switching model).

    Example::
        >>> autoattack_accuracy(model, x[:8], y[:8], eps=0.1, version="custom", attacks=["apgd-ce"])
    """
    attack = AutoAttackEval(eps, version=version, attacks=attacks, norm=norm, seed=seed, batch_size=batch_size,
                            whole_set=True, n_queries=n_queries)
    x_adv = attack.examples(model, x, y)
    with model_mode(model, False):
        clean = correct_matrix(model, x, y, batch_size).float().mean().item()
        robust_mat = correct_matrix(model, x_adv, y, batch_size)
        robust = robust_mat.float().mean().item()
    # which images survived, as "0"/"1" per image: for paired comparisons on the same images
    # (rst.evaluation.compare.paired_difference); None for a member-switching model (one row per member)
    per_image = encode_per_image(robust_mat[0]) if robust_mat.shape[0] == 1 else None
    ran = list(attacks) if version == "custom" else {
        "standard": ["apgd-ce", "apgd-t", "fab-t", "square"],
        "plus": ["apgd-ce", "apgd-dlr", "fab", "square", "apgd-t", "fab-t"],
        "rand": ["apgd-ce", "apgd-dlr"]}[version]
    return {"clean": clean, "robust": robust, "version": version, "attacks": ran, "n_images": len(x),
            "eps": eps, "norm": norm, "seed": seed, "robust_per_image": per_image, "log": attack.logs[-1]}


__all__ = ["AutoAttackEval", "autoattack_accuracy", "autoattack_examples", "VERSIONS", "ATTACK_NAMES"]

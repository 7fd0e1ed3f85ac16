"""Evaluation: clean and robust accuracy (BN in eval mode, attacks in [0, 1] pixel space).

The paper's protocol (Fu et al. 2021, §3): PGD-20, eps = 8/255, step 2/255, one random start,
L-inf, full test set, BN in eval mode. Model selection never looks at the test set.

    predict / accuracy / robust_accuracy / adversarial_examples   one model
    sparsity_curve(cs, x, y, attack)          clean and robust accuracy of every ticket, by keep ratio
    transfer_matrix(cs, x, y, attack)         K x K transfer accuracies, K source attacks (spec §4)

R2S (the random switch) lives in ``rst.evaluation.r2s``, its adaptive attacks in ``rst.evaluation.adaptive`` and
its evaluation in ``rst.evaluation.protocols``; per-image scores and attack suites in ``rst.evaluation.suite``;
attack sanity checks in ``rst.evaluation.sanity``; AutoAttack in ``rst.evaluation.autoattack``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn

from .attacks import AttackConfig, check_pixel_range, run_attack
from rst.runtime.speed import eval_channels_last, memory_format, resolve_speed
from rst.network.masked import masked_layers
from .suite import scores


def _warn_if_training(model: nn.Module) -> None:
    if model.training:
        warnings.warn("evaluating a model in train mode: BatchNorm uses batch statistics and updates its "
                      "running statistics; call model.eval() first", stacklevel=3)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Predicted labels (N,) of ``x`` (N, C, H, W), batched, on the model's device."""
    device = next(model.parameters()).device
    out = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Clean accuracy in [0, 1]."""
    _warn_if_training(model)
    return (predict(model, x, batch_size) == y.cpu()).float().mean().item() if len(x) else float("nan")


def scored_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """The mean per-image score (:func:`rst.evaluation.suite.scores`) over ``x``, batched on the model's device."""
    _warn_if_training(model)
    return scores(model, x, y, batch_size).mean().item() if len(x) else float("nan")


def adversarial_examples(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                         batch_size: int = 512, seed: int = 0, progress=None, precision: str = "fp32") -> torch.Tensor:
    """``x_adv`` for every example (on the CPU), attacking in batches on the model's device.

    ``seed`` seeds the attack's random start (one generator for the whole pass). ``x`` must be in
    [0, 1] (ValueError otherwise): checked once here, where it lies, not in every batch's attack.
    ``precision``: the attack's gradients in "fp32" (default: evaluation stays exact), "bf16"
    (autocast where the device has it natively) or "auto" (:mod:`rst.runtime.speed`).
    """
    check_pixel_range(x)
    device = next(model.parameters()).device
    speed = resolve_speed(precision, channels_last=False, compile=False, device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    out = []
    with memory_format(model, speed.channels_last or (speed.precision == "fp32" and eval_channels_last(device))):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size].to(device), y[i:i + batch_size].to(device)
            with speed.autocast(device):
                x_adv = run_attack(attack, model, xb, yb, generator=g, check_range=False)
            out.append(x_adv.float().cpu())
            if progress is not None:
                progress(min(i + batch_size, len(x)), len(x))
    return torch.cat(out)


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig,
                    batch_size: int = 512, seed: int = 0, precision: str = "fp32") -> float:
    """Accuracy on ``attack``'s adversarial examples of ``x`` (the model is attacked in eval mode).

    ``precision`` is the attack's (see :func:`adversarial_examples`); the accuracy itself is fp32.
    """
    _warn_if_training(model)
    x_adv = adversarial_examples(model, x, y, attack, batch_size, seed, precision=precision)
    return accuracy(model, x_adv, y, batch_size)


# --------------------------------------------------------------------------------------------
# Sparsity curve and transfer matrix over a candidate set (Fu et al. 2021, §4 of the spec)
# --------------------------------------------------------------------------------------------


def _member_contexts(source, device=None):
    """``(names, keep_ratios, contexts, device)`` for a CandidateSet, an R2S or a list of models.

    ``contexts[k]()`` is a context manager yielding an eval-mode module that computes member k:
    a CandidateSet builds ONE network and switches tickets (masks + BN statistics) on it; an R2S
    (anything with ``use_member`` and ``K``) fixes its member; models are used as they are.
    """
    from rst.network.masks import CandidateSet, apply_ticket
    from rst.network.models import build_network

    if isinstance(source, CandidateSet):
        if not len(source):
            raise ValueError("the candidate set is empty")
        net = build_network(source.spec, device=device).eval()

        def ticket_ctx(k):
            @contextlib.contextmanager
            def ctx():
                apply_ticket(net, source.tickets[k])
                yield net
            return ctx

        names = [t.name or f"keep{t.keep_ratio:g}" for t in source.tickets]
        ratios = [float(t.keep_ratio) for t in source.tickets]
        return names, ratios, [ticket_ctx(k) for k in range(len(source))], next(net.parameters()).device
    if hasattr(source, "use_member") and hasattr(source, "K"):
        dev = next(source.parameters()).device
        names = list(getattr(source, "names", [f"member{k}" for k in range(source.K)]))
        ratios = list(getattr(source, "keep_ratios", [float("nan")] * source.K))
        return names, ratios, [functools.partial(source.use_member, k) for k in range(source.K)], dev
    models = list(source)
    if not models:
        raise ValueError("need at least one model")
    if device is not None:
        models = [m.to(device) for m in models]
    names, ratios = [], []
    for k, m in enumerate(models):
        layers = list(masked_layers(m))
        ratios.append(float(layers[0][1].keep_ratio) if layers else float("nan"))
        names.append(f"model{k}")
    return names, ratios, [functools.partial(contextlib.nullcontext, m) for m in models], \
        next(models[0].parameters()).device


def sparsity_curve(cs, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, *, device=None,
                   batch_size: int = 512, seed: int = 0, progress=None) -> list[dict]:
    """Clean and robust accuracy of every ticket of a candidate set, by keep ratio.

    The paper's Fig. 2-style curve (Fu et al. 2021, arXiv:2110.14068): robust accuracy against the
    fraction of weights kept. Every ticket is attacked white-box with ``attack`` (eval-mode BN),
    its random start seeded with ``seed`` (the same for every ticket).

    Arguments:
        cs (CandidateSet): tickets over one seeded network (one network is built, tickets switched).
        x (Tensor): (N, C, H, W) in [0, 1]. y (Tensor): (N,).
        attack (AttackConfig): e.g. ``AttackConfig("pgd", eps=8/255, alpha=2/255, steps=20)``.
        device: where to compute (default: CPU). batch_size: images per batch. (Default: 512)
        progress: ``progress(done_tickets, total_tickets)``.

    Returns:
        rows ``{"name", "keep_ratio", "clean", "robust", "attack"}`` sorted by keep ratio.

    Example::
        >>> rows = sparsity_curve(cs, x, y, AttackConfig("pgd", eps=0.1, alpha=0.025, steps=20))
    """
    names, ratios, contexts, _ = _member_contexts(cs, device)
    rows = []
    for k, ctx in enumerate(contexts):
        with ctx() as model:
            rows.append({"name": names[k], "keep_ratio": ratios[k], "clean": accuracy(model, x, y, batch_size),
                         "robust": robust_accuracy(model, x, y, attack, batch_size, seed),
                         "attack": attack.describe()})
        if progress is not None:
            progress(k + 1, len(contexts))
    return sorted(rows, key=lambda r: r["keep_ratio"])


TRANSFER_LABELS = {
    False: "transfer, source attacked WITHOUT early stop",
    True: "transfer, source attacked WITH source-side early stop (inflated: the source stops pushing once it errs)",
}


@dataclass
class TransferResult:
    """``matrix[i, j]``: accuracy of target j on adversarial examples crafted on source i."""
    names: list[str]
    keep_ratios: list[float]
    matrix: torch.Tensor            # (K, K), rows = sources, columns = targets
    attack: str
    early_stop: bool
    n_images: int
    label: str

    def to_dict(self) -> dict:
        return {"names": list(self.names), "keep_ratios": list(self.keep_ratios),
                "matrix": self.matrix.tolist(), "attack": self.attack, "early_stop": self.early_stop,
                "n_images": self.n_images, "label": self.label,
                "diagonal_mean": float(self.matrix.diagonal().mean()),
                "off_diagonal_mean": _off_diagonal_mean(self.matrix), "mean": float(self.matrix.mean())}

    def to_frame(self):
        """Long format: one row per (source, target) (pandas.DataFrame)."""
        import pandas as pd
        K = len(self.names)
        return pd.DataFrame([{"source": self.names[i], "source_keep_ratio": self.keep_ratios[i],
                              "target": self.names[j], "target_keep_ratio": self.keep_ratios[j],
                              "accuracy": float(self.matrix[i, j]), "attack": self.attack,
                              "early_stop": self.early_stop, "n_images": self.n_images}
                             for i in range(K) for j in range(K)])


def _off_diagonal_mean(m: torch.Tensor) -> float:
    K = m.shape[0]
    return float((m.sum() - m.diagonal().sum()) / (K * K - K)) if K > 1 else float("nan")


def transfer_matrix(cs_or_models, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig, *,
                    early_stop: bool = False, device=None, batch_size: int = 512, seed: int = 0,
                    progress=None) -> TransferResult:
    """Transferability of adversarial examples between tickets (Fu et al. 2021, §4; spec §4).

    Each source i is attacked ONCE (K attacks, not K²) with ``attack`` and a fresh generator seeded
    with ``seed`` — so the diagonal equals each ticket's white-box ``robust_accuracy`` under the same
    attack, batch size and seed — and its examples are evaluated on every target j in the same pass.
    "Equals" holds bit for bit on a CPU. On CUDA some backward kernels are nondeterministic (the
    adaptive pooling of ``fmnist_conv4``, for one), so there the two agree only up to examples that
    rounding tips over; :func:`rst.runtime.device.deterministic` makes CUDA runs repeatable where every op
    has a deterministic kernel (and refuses where one has not).

    ``early_stop`` overrides the attack's flag. Without it (default) the source keeps pushing every
    example for all steps; with it (the reference code's evaluation) an example freezes as soon as
    the *source* misclassifies it, which inflates the off-diagonal (transfer) accuracies. The
    result's ``label`` says which.

    Arguments:
        cs_or_models: a CandidateSet (one network, tickets switched), an R2S (members switched) or a
            list of models (eval mode).
        x (Tensor): (N, C, H, W) in [0, 1]. y (Tensor): (N,).
        attack (AttackConfig): the source-side attack, e.g. PGD-20.
        device: for a CandidateSet, where to build the network (default CPU); models are moved there.
        progress: ``progress(done_images, total)`` with total = K * N attacked images.

    Example::
        >>> tr = transfer_matrix(cs, x, y, AttackConfig("pgd", eps=8/255, alpha=2/255, steps=20))
        >>> tr.matrix.diagonal()      # white-box robust accuracies
    """
    names, ratios, contexts, _ = _member_contexts(cs_or_models, device)
    cfg = dataclasses.replace(attack, early_stop=bool(early_stop))
    K, N = len(contexts), len(x)
    matrix = torch.zeros(K, K)
    for i, src_ctx in enumerate(contexts):
        sub = None if progress is None else (lambda d, t, i=i: progress(i * N + d, K * N))
        with src_ctx() as src:
            _warn_if_training(src)
            x_adv = adversarial_examples(src, x, y, cfg, batch_size, seed, progress=sub)
        for j, tgt_ctx in enumerate(contexts):
            with tgt_ctx() as tgt:
                matrix[i, j] = scored_accuracy(tgt, x_adv, y, batch_size)
    return TransferResult(names, ratios, matrix, cfg.describe(), bool(early_stop), N, TRANSFER_LABELS[bool(early_stop)])


def pgd20(eps: float) -> AttackConfig:
    """The evaluation attack of the test metrics, the zoo's curve and its reports: PGD-20, step eps/4."""
    return AttackConfig("pgd", eps=eps, alpha=eps / 4, steps=20)


def test_metrics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> dict:
    """Clean and PGD-20 (step eps/4) accuracy of ``model`` on test images, as metric records.

    ``{"test_clean": {"value", "split", "attack"}, "test_pgd20": {...}}``: the records stored in
    mask files and the zoo index, each naming the attack that measured it.
    """
    attack = pgd20(eps)
    split = f"test[:{len(x)}]"
    return {"test_clean": {"value": accuracy(model, x, y), "split": split, "attack": "none"},
            "test_pgd20": {"value": robust_accuracy(model, x, y, attack, seed=seed), "split": split,
                           "attack": attack.describe()}}

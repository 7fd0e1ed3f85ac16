"""Several tickets of ONE random network searched in one batched pass.

A candidate set is K searches over the same frozen weights that differ only in ``keep_ratio``.
:class:`TicketBatch` holds the K score tensors and the K sets of BatchNorm statistics stacked along
a leading dimension and runs all K subnetworks in one forward with :func:`torch.func.vmap` (which
turns the K convolutions into one grouped convolution, the K BatchNorms into one):

    x: (K*B, C, H, W)  ->  chunk k = rows k*B .. (k+1)*B - 1 goes through ticket k  ->  (K*B, classes)

Because chunk k reaches only ticket k's loss, every attack written for one model crafts each
ticket's own adversarial examples when it is given the K stacked copies of a batch, and the
gradient of ``K * mean cross-entropy`` w.r.t. ticket k's scores is exactly what a separate search
computes. So :func:`rst.search.loop.adversarial_fit` runs a TicketBatch with its usual loop: it repeats
each batch K times, scales the loss by K, validates every member and keeps, per member, the state
of that member's best validation epoch.

    >>> tb = TicketBatch(build_network(cfg.network_spec()), keep_ratios=(0.05, 0.1, 0.3))
    >>> results = search_tickets(cfg, (0.05, 0.1, 0.3), device="cuda")   # one SearchResult each

Worth it when one ticket does not fill the device (small networks, small batches, e.g. the
Fashion-MNIST Conv-4 on a GPU). The memory of activations grows K-fold.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
from torch.func import functional_call, vmap

from rst.evaluation.attacks import AttackConfig, model_mode, run_attack
from rst.network.masked import TopKMask, masked_layers, n_keep, set_dense, set_keep_ratio
from rst.network.masks import extract_ticket
from rst.network.models import build_network
from rst.runtime.provenance import provenance
from rst.runtime.checkpoint import checkpoint_in
from .loop import SearchResult, adversarial_fit, search_data, validation_metrics


def _bn_input_in_fp32(module: nn.Module, args: tuple) -> tuple:
    """BatchNorm under vmap with bf16 autocast: run it on an fp32 input.

    vmap's batch-norm rule makes stand-in weight/bias tensors (our BN has no affine parameters) in
    the INPUT's dtype while the running statistics stay fp32; a bf16 input then fails ("expected
    scalar type BFloat16 but found Float") in the forward on a CPU and in the backward on CUDA.
    Normalising in fp32 is what BN does internally anyway; the next conv autocasts back to bf16.
    """
    x = args[0]
    return (x.float(),) + args[1:] if x.dtype in (torch.bfloat16, torch.float16) else args


class TicketBatch(nn.Module):
    """K tickets (one per ``keep_ratios`` entry) of ``network``, computed in one pass.

    The TicketBatch takes ``network`` over: it keeps the frozen weights there, uses the network's
    scores as every member's starting scores (a separate search starts from the same ones), and
    owns everything a member learns as tensors whose first dimension is the member. ``network``
    is not a submodule: its own scores and BN buffers are unused while it serves the batch.
    """

    def __init__(self, network: nn.Module, keep_ratios: Sequence[float]):
        super().__init__()
        if not keep_ratios:
            raise ValueError("a TicketBatch needs at least one keep ratio")
        for r in keep_ratios:
            n_keep(1, r)                                          # validates each ratio
        self.keep_ratios = tuple(float(r) for r in keep_ratios)
        k = len(self.keep_ratios)
        object.__setattr__(self, "network", network)              # hidden from modules()/state_dict()
        self._layers = [name for name, _ in masked_layers(network)]
        layers = dict(masked_layers(network))
        self.scores = nn.ParameterList(
            [nn.Parameter(layers[n].scores.detach().unsqueeze(0).repeat(k, *[1] * layers[n].scores.dim()))
             for n in self._layers])
        self._buffers_of_network = [n for n, _ in network.named_buffers()]
        for i, (_, b) in enumerate(network.named_buffers()):
            self.register_buffer(f"stat{i}", b.detach().unsqueeze(0).repeat(k, *[1] * b.dim()))
        # per-member model selection (see :meth:`select`); in the state dict, so checkpoints keep it
        self.register_buffer("best_val", torch.full((k,), -1.0))
        self.register_buffer("best_epoch", torch.full((k,), -1, dtype=torch.long))
        for i, s in enumerate(self.scores):
            self.register_buffer(f"best_scores{i}", s.detach().clone())
        for i in range(len(self._buffers_of_network)):
            self.register_buffer(f"best_stat{i}", getattr(self, f"stat{i}").clone())
        set_dense(network, True)                                  # layers use the weight handed to them
        for m in network.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.register_forward_pre_hook(_bn_input_in_fp32)
        self._cached: list[torch.Tensor] | None = None

    @property
    def n_members(self) -> int:
        return len(self.keep_ratios)

    # -- the forward ---------------------------------------------------------------------------

    def _stats(self) -> list[torch.Tensor]:
        return [getattr(self, f"stat{i}") for i in range(len(self._buffers_of_network))]

    def effective_weights(self) -> list[torch.Tensor]:
        """Per masked layer, ``w * top-k(|s_k|)`` stacked over the members: (K, *weight.shape)."""
        if self._cached is not None:
            return self._cached
        layers = dict(masked_layers(self.network))
        out = []
        for name, scores in zip(self._layers, self.scores):
            w = layers[name].weight
            out.append(torch.stack([w * TopKMask.apply(scores[k].abs(), n_keep(scores[k].numel(), r))
                                    for k, r in enumerate(self.keep_ratios)]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.n_members
        if x.shape[0] % k:
            raise ValueError(f"a TicketBatch of {k} members takes K*B inputs (member k: rows k*B..), "
                             f"got {x.shape[0]} rows")
        if self.network.training != self.training:               # model_mode() sets .training directly
            self.network.train(self.training)
        params = {f"{n}.weight": w for n, w in zip(self._layers, self.effective_weights())}
        stats = dict(zip(self._buffers_of_network, self._stats()))

        def one(p, b, xk):
            return functional_call(self.network, (p, b), (xk,))
        return vmap(one)(params, stats, x.view(k, -1, *x.shape[1:])).flatten(0, 1)

    @contextlib.contextmanager
    def cached_weights(self):
        """Compute every member's ``w * mask`` once (detached) for the forwards inside (attack steps).

        :func:`rst.network.masked.cached_masks` enters it, so every attack in :mod:`rst.evaluation.attacks` uses it.
        """
        previous = self._cached
        try:
            if previous is None:
                with torch.no_grad():
                    self._cached = [w.detach() for w in self.effective_weights()]
            yield self
        finally:
            self._cached = previous

    def _apply(self, fn, *args, **kwargs):
        self.network._apply(fn, *args, **kwargs)                # device / dtype moves reach the weights
        return super()._apply(fn, *args, **kwargs)

    def stack(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """K copies of a batch, in member order: what :meth:`forward` and the attacks take."""
        return x.repeat(self.n_members, *[1] * (x.dim() - 1)), y.repeat(self.n_members)

    # -- validation and per-member selection ---------------------------------------------------

    def member_accuracies(self, x: torch.Tensor, y: torch.Tensor, attack: AttackConfig | None = None, *,
                          batch_size: int = 512, seed: int = 0) -> list[float]:
        """Accuracy of every member on ``x`` (each attacked on its own with ``attack``), eval mode.

        Seeded like :func:`rst.evaluation.metrics.robust_accuracy` (one generator for the pass): a one-member
        batch gives the same number as that function on the member's own network.
        """
        device = self.scores[0].device
        g = torch.Generator(device=device).manual_seed(seed)
        correct = []
        with model_mode(self, False):
            for i in range(0, len(x), batch_size):
                xb, yb = self.stack(x[i:i + batch_size].to(device), y[i:i + batch_size].to(device))
                if attack is not None:
                    xb = run_attack(attack, self, xb, yb, generator=g)
                with torch.no_grad():
                    correct.append((self(xb).argmax(1) == yb).view(self.n_members, -1))
        if not correct:
            return [float("nan")] * self.n_members
        return torch.cat(correct, 1).float().mean(1).tolist()

    @torch.no_grad()
    def select(self, epoch: int, val_robust: Sequence[float]) -> list[int]:
        """Keep, for every member whose ``val_robust`` beats its best so far, the current state.

        Returns the members that improved. :meth:`load_best` puts the kept states back.
        """
        val = torch.tensor(list(val_robust), dtype=self.best_val.dtype, device=self.best_val.device)
        better = val > self.best_val
        self.best_val[better] = val[better]
        self.best_epoch[better] = epoch
        for i, s in enumerate(self.scores):
            getattr(self, f"best_scores{i}")[better] = s.detach()[better]
        for i, st in enumerate(self._stats()):
            getattr(self, f"best_stat{i}")[better] = st[better]
        return better.nonzero().flatten().tolist()

    @torch.no_grad()
    def load_best(self) -> None:
        """Every member back to its best validation epoch (members never selected keep their state)."""
        chosen = self.best_epoch >= 0
        for i, s in enumerate(self.scores):
            s[chosen] = getattr(self, f"best_scores{i}")[chosen]
        for i, st in enumerate(self._stats()):
            st[chosen] = getattr(self, f"best_stat{i}")[chosen]

    # -- out to ordinary tickets -----------------------------------------------------------------

    @torch.no_grad()
    def member_network(self, k: int) -> nn.Module:
        """The hidden network set to member ``k`` (its scores, keep ratio, BN statistics), masked.

        It is the TicketBatch's own network: take what you need (e.g. :func:`rst.network.masks.extract_ticket`)
        and call :meth:`release` before running the batch again.
        """
        layers = dict(masked_layers(self.network))
        for name, scores in zip(self._layers, self.scores):
            layers[name].scores.copy_(scores[k])
        for (_, b), st in zip(self.network.named_buffers(), self._stats()):
            b.copy_(st[k])
        set_keep_ratio(self.network, self.keep_ratios[k])
        set_dense(self.network, False)
        self.network.eval()
        return self.network

    def release(self) -> None:
        set_dense(self.network, True)


def search_tickets(cfg, keep_ratios: Sequence[float], *, device=None, data=None, data_dir=None, workdir=None,
                   resume: bool = False, progress: Callable[[dict], None] | None = None,
                   should_stop: Callable[[], bool] | None = None, allow_changes: tuple[str, ...] = ()) -> list:
    """Search one ticket per ``keep_ratios`` entry from ``cfg``'s network in ONE batched pass.

    Same recipe, same data order and same selection rule as K calls of :func:`rst.search.loop.run_search`
    (``cfg.keep_ratio`` is ignored); returns one :class:`rst.search.loop.SearchResult` per ratio.
    """
    if cfg.channels_last:
        raise ValueError("channels_last is not supported in the batched search (vmap stacks 5-d weights)")
    if cfg.scope != "layer":
        raise ValueError("the batched search keeps the paper's per-layer ratio (scope='layer'); "
                         "search global-scope tickets one at a time")
    device = torch.device(device or "cpu")
    spec = cfg.network_spec()
    batch = TicketBatch(build_network(spec), keep_ratios).to(device)
    data = data if data is not None else search_data(cfg, data_dir)
    ckpt = checkpoint_in(workdir)
    fit = adversarial_fit(batch, list(batch.scores), cfg, data, device, checkpoint=ckpt, resume=resume,
                          progress=progress, should_stop=should_stop, allow_changes=allow_changes)
    results = []
    for k, r in enumerate(batch.keep_ratios):
        member_cfg = cfg.replace(keep_ratio=r)
        # one member: adversarial_fit treats the batch as a plain model (no per-member records)
        per_member = batch.n_members > 1
        best = int(batch.best_epoch[k]) if per_member and cfg.selection == "val" else fit.best_epoch
        history = [{**{key: v for key, v in h.items() if key != "members"}, **(h["members"][k] if per_member else {})}
                   for h in fit.history]
        record = next((h for h in history if h["epoch"] == best), {})
        ticket = extract_ticket(batch.member_network(k), name=f"keep{r:g}",
                                metrics=validation_metrics(record, member_cfg),
                                search_config={**member_cfg.to_dict(), "best_epoch": best, "speed": fit.speed,
                                               "batched_with": list(batch.keep_ratios)})
        batch.release()
        results.append(SearchResult(ticket, spec, member_cfg, history, best, fit.stopped,
                                    provenance(str(device))))
    return results

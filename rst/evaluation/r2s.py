"""R2S, the Random RST Switch (Fu et al., NeurIPS 2021, arXiv:2110.14068, §4 of the spec), and its
honest evaluation.

At inference R2S answers every query with one ticket drawn at random from a candidate set whose
tickets share the *same* frozen random weights. The paper reports its robustness under a
non-adaptive protocol: the attacker crafts adversarial examples on one random member and the
defender answers with another (the mean of the transfer matrix). A defence that draws randomness at
inference must instead be attacked adaptively (Athalye et al., ICML 2018, "Obfuscated Gradients
Give a False Sense of Security", arXiv:1802.00420, EOT; Tramèr et al., NeurIPS 2020, "On Adaptive
Attacks to Adversarial Example Defenses", arXiv:2002.08347). With K members the expectation over
the random switch is a finite mean, so it can be attacked and measured *exactly*:

    expectation   PGD on  (1/K) Σ_k CE(f_k(x), y)            (EOT with zero variance)
    ensemble      PGD on  CE((1/K) Σ_k f_k(x), y)             (mean logits)
    eot           torchattacks EOTPGD on the switching module (sampled switches, a cross-check)
    autoattack_rand  AutoAttack version='rand' (APGD-CE/DLR with EOT=20; Croce & Hein 2020,
                  arXiv:2003.01690)

and every adversarial batch is evaluated on every member: the expected accuracy over the random
draw is the mean over members (no sampling noise), the worst member is the minimum.

    >>> cs = rst.load_tickets("tickets.rst.safetensors")
    >>> r2s = R2S(cs, switch="batch", seed=0, device="cpu")
    >>> logits = r2s(x)                        # one random member for the whole batch
    >>> with r2s.use_member(2):                # member 2 only
    ...     logits2 = r2s(x)
    >>> report = evaluate_r2s(r2s, x, y, eps=8/255, protocols=("paper", "expectation"))
    >>> report.to_frame()
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attacks import AttackConfig, pgd
from rst.network.masked import masked_layers
from rst.network.masks import CandidateSet, _bn_buffers, bit_shift_table, pack_bits, unpack_bits
from rst.network.models import build_network
from rst.runtime.progress import ticker
from .sanity import SanityCheck
from rst.runtime.speed import flush_subnormal_
from .switch_probabilities import check_probabilities, is_uniform

SWITCHES = ("call", "batch", "example")
PROTOCOLS = ("paper", "expectation", "ensemble", "eot", "apgd_ce", "apgd_dlr", "arc", "autoattack_rand")
#: the adaptive attacks on the random switch, each a function of (r2s, x, y) (see adaptive_examples)
ADAPTIVE = tuple(p for p in PROTOCOLS if p != "paper")

THREAT_MODELS = {
    "paper": "non-adaptive: attacker targets one random member, defender answers with another "
             "(paper's protocol)",
    "expectation": "adaptive white-box: PGD on the mean cross-entropy over all members "
                   "(exact EOT over the random switch)",
    "ensemble": "adaptive white-box: PGD on the cross-entropy of the members' mean logits",
    "eot": "adaptive white-box: EOT-PGD against the randomly switching model (sampled switches)",
    "apgd_ce": "adaptive white-box: APGD-CE on the mean cross-entropy over all members (Croce & Hein's "
               "loop), keeping per example the iterate with the lowest expected accuracy",
    "apgd_dlr": "adaptive white-box: APGD-DLR on the mean DLR loss over all members, keeping per example "
                "the iterate with the lowest expected accuracy",
    "arc": "adaptive white-box: ARC (Dbouk & Shanbhag 2022), steps toward each member's closest "
           "decision boundary, keeping steps that lower the expected accuracy",
    "autoattack_rand": "adaptive white-box: AutoAttack version='rand' (APGD-CE + APGD-DLR, EOT=20) "
                       "against the randomly switching model",
}

class R2S(nn.Module):
    """Random RST Switch: one copy of the frozen random weights, K bit-packed masks, K BN statistics.

    Fu et al., NeurIPS 2021 (arXiv:2110.14068), §4: at inference each query is answered by a ticket
    drawn at random from a candidate set over the same random weights.

    Memory: the seeded weights once (plus one float cache of the active member's ``w * mask``),
    ``ceil(#mask elements / 8)`` bytes per member for its mask and its BatchNorm running statistics —
    never K copies of the network. BatchNorm always runs in eval mode with the active member's
    running statistics (``train()`` changes only this module's flag, never the network's).

    Arguments:
        cs (CandidateSet): tickets over one seeded network.
        members (list[int] | None): indices of the tickets of ``cs`` to switch between
            (default: all). Member ``k`` of this module is ticket ``members[k]``.
        switch (str): "call" or "batch": one member, drawn per forward call, answers the whole batch;
            "example": each example gets its own member (examples are grouped by member).
            (Default: "batch")
        seed (int): seed of the ``torch.Generator`` (CPU) that draws the members. (Default: 0)
        device: where the network lives. (Default: CPU)
        probabilities (list[float] | None): the switch probabilities ``alpha`` of the members
            (:mod:`rst.evaluation.switch_probabilities`); every draw, expected accuracy and attack on the
            switch uses them. None: the candidate set's recorded ones when it has them for these
            members, else uniform (the paper's R2S). (Default: None)

    Shape:
        - x: :math:`(B, C, H, W)` in [0, 1]. - output: :math:`(B, num\\_classes)` logits.

    Examples::
        >>> r2s = R2S(cs, switch="example", seed=0)
        >>> logits = r2s(x)                         # (B, 10), members in r2s.last_members
        >>> all_logits = r2s.member_logits(x)       # (K, B, 10), differentiable
        >>> with r2s.use_member(0):
        ...     logits0 = r2s(x)                    # bitwise equal to cs.model(members[0])(x)
    """

    def __init__(self, cs: CandidateSet, *, members: list[int] | None = None, switch: str = "batch",
                 seed: int = 0, device: torch.device | str | None = None,
                 probabilities: Sequence[float] | None = None):
        super().__init__()
        if switch not in SWITCHES:
            raise ValueError(f"switch must be one of {SWITCHES}, got {switch!r}")
        members = list(range(len(cs))) if members is None else [int(m) for m in members]
        if not members:
            raise ValueError("R2S needs at least one member")
        bad = [m for m in members if not 0 <= m < len(cs)]
        if bad:
            raise ValueError(f"member indices {bad} out of range for a candidate set of {len(cs)} tickets")
        self.spec = cs.spec
        self.switch = switch
        self.members = members
        self.names = [cs.tickets[m].name or f"keep{cs.tickets[m].keep_ratio:g}" for m in members]
        self.keep_ratios = [float(cs.tickets[m].keep_ratio) for m in members]
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_members: torch.Tensor | None = None   # (B,) member of each example of the last call
        if probabilities is None and cs.probabilities is not None:
            recorded = torch.tensor([cs.probabilities[m] for m in members], dtype=torch.float64)
            probabilities = (recorded / recorded.sum()).tolist() if recorded.sum() > 0 else None
        self.set_probabilities(probabilities)

        self.net = build_network(cs.spec, device=device).eval()
        dev = next(self.net.parameters()).device
        self._layers = dict(masked_layers(self.net))
        # The scores are never used (masks are fixed): replace them by a zero-storage view.
        for layer in self._layers.values():
            layer.scores = nn.Parameter(torch.zeros((), device=dev).expand(layer.scores.shape), requires_grad=False)

        # K masks per layer, bit-packed: (K, ceil(n / 8)) uint8, and the bit-shift table that unpacks
        # them (non-persistent buffers, so that .to(device) moves them and a member switch never
        # copies anything from the host)
        self.register_buffer("bit_shifts", bit_shift_table(dev), persistent=False)
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._mask_buffers: dict[str, str] = {}
        for i, (name, layer) in enumerate(self._layers.items()):
            shape = tuple(layer.scores.shape)
            rows = []
            for m in members:
                mask = cs.tickets[m].masks.get(name)
                if mask is None or tuple(mask.shape) != shape:
                    got = None if mask is None else tuple(mask.shape)
                    raise ValueError(f"ticket {m} has mask shape {got} for layer {name!r}, expected {shape}")
                rows.append(pack_bits(mask.bool()))
            self._shapes[name] = shape
            self._mask_buffers[name] = f"packed_mask_{i}"
            self.register_buffer(f"packed_mask_{i}", torch.stack(rows).to(dev), persistent=False)
        # K BN statistics per buffer: (K, C)
        self._bn_modules: dict[str, tuple[nn.Module, str]] = {}
        self._bn_buffers: dict[str, str] = {}
        for i, (key, module, buf) in enumerate(_bn_buffers(self.net)):
            stats = []
            for m in members:
                if key not in cs.tickets[m].bn_stats:
                    raise ValueError(f"ticket {m} has no BatchNorm statistic {key!r}")
                stats.append(cs.tickets[m].bn_stats[key].to(getattr(module, buf).dtype))
            self._bn_modules[key] = (module, buf)
            self._bn_buffers[key] = f"bn_stats_{i}"
            self.register_buffer(f"bn_stats_{i}", flush_subnormal_(torch.stack(stats)).to(dev),   # as apply_ticket
                                 persistent=False)

        self._active: int | None = None
        self._weights: dict[str, torch.Tensor] = {}
        self._fixed: list[int] = []
        self._activate(0)
        self.eval()    # an inference-only module

    # ----------------------------------------------------------------------------------------
    # members
    # ----------------------------------------------------------------------------------------

    @property
    def _packed(self) -> dict[str, torch.Tensor]:
        """Layer name -> its K packed masks, (K, ceil(n / 8)) uint8."""
        return {name: getattr(self, buf) for name, buf in self._mask_buffers.items()}

    @property
    def _bn(self) -> dict[str, torch.Tensor]:
        """BN buffer key -> its K values, (K, C)."""
        return {key: getattr(self, buf) for key, buf in self._bn_buffers.items()}

    def _apply(self, fn, *args, **kwargs):
        """``.to(device)`` / ``.double()`` ...: move everything, then rebuild the active member's cache."""
        super()._apply(fn, *args, **kwargs)
        dev = next(self.net.parameters()).device
        for layer in self._layers.values():
            layer.scores = nn.Parameter(torch.zeros((), device=dev, dtype=layer.weight.dtype)
                                        .expand(layer.scores.shape), requires_grad=False)
            layer._cached_weight = None
        active, self._active = self._active, None
        self._weights = {}
        self._activate(0 if active is None else active)
        return self

    @property
    def K(self) -> int:
        """Number of members."""
        return len(self.members)

    def set_probabilities(self, probabilities: Sequence[float] | None) -> None:
        """Set the switch probabilities ``alpha`` (None: uniform); checked (:func:`check_probabilities`)."""
        K = self.K
        p = [1.0 / K] * K if probabilities is None else check_probabilities(probabilities, K)
        self.member_probs = torch.tensor(p, dtype=torch.float32)         # read by rst.evaluation.ensemble_attacks
        self.uniform = is_uniform(self.member_probs)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the member draws from ``seed`` (default: the constructor's seed)."""
        self.generator.manual_seed(self.seed if seed is None else int(seed))

    def members_memory_bytes(self) -> int:
        """Bytes of the K packed masks plus the K sets of BN statistics (the per-member state)."""
        return (sum(p.numel() * p.element_size() for p in self._packed.values())
                + sum(s.numel() * s.element_size() for s in self._bn.values()))

    @torch.no_grad()
    def _activate(self, k: int) -> None:
        """Make member ``k`` the network's ticket: unpack its masks, cache ``w * mask``, load BN stats."""
        if k == self._active:
            return
        for name, layer in self._layers.items():
            mask = unpack_bits(getattr(self, self._mask_buffers[name])[k], self._shapes[name], self.bit_shifts)
            layer.fixed_mask = mask
            # the same expression as MaskedMixin.effective_weight: bitwise equal to plain inference
            self._weights[name] = (layer.weight * mask.to(layer.weight.dtype)).detach()
        for key, (module, buf) in self._bn_modules.items():
            # rebind, never copy_ in place: autograd may still hold the previous member's statistics
            setattr(module, buf, getattr(self, self._bn_buffers[key])[k])
        self._active = k

    def _run(self, k: int, x: torch.Tensor) -> torch.Tensor:
        self._activate(k)
        # (re)install the cache at every call: rst.network.masked.cached_masks clears it on exit
        for name, layer in self._layers.items():
            layer._cached_weight = self._weights[name]
        if self.net.training:
            self.net.eval()
        return self.net(x)

    @contextlib.contextmanager
    def use_member(self, k: int) -> Iterator["R2S"]:
        """Inside the block every forward uses member ``k`` (0 <= k < K); nests and restores."""
        if not 0 <= k < self.K:
            raise IndexError(f"member {k} out of range (K = {self.K})")
        self._fixed.append(int(k))
        try:
            yield self
        finally:
            self._fixed.pop()

    def draw(self, n: int) -> torch.Tensor:
        """``n`` member indices drawn with probabilities ``member_probs`` (the module's generator), (n,) int64, CPU."""
        if self.uniform:
            return torch.randint(self.K, (n,), generator=self.generator)
        return torch.multinomial(self.member_probs, n, replacement=True, generator=self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) in [0, 1]
        B = x.shape[0]
        if self._fixed:
            k = self._fixed[-1]
            self.last_members = torch.full((B,), k, dtype=torch.long)
            return self._run(k, x)
        if self.switch in ("call", "batch") or B <= 1:
            k = int(self.draw(1).item())
            self.last_members = torch.full((B,), k, dtype=torch.long)
            return self._run(k, x)
        draws = self.draw(B)                                              # (B,)
        self.last_members = draws
        order = torch.argsort(draws, stable=True)
        parts, counts = [], torch.bincount(draws, minlength=self.K).tolist()
        start = 0
        for k, c in enumerate(counts):
            if c:
                idx = order[start:start + c].to(x.device)
                parts.append(self._run(k, x.index_select(0, idx)))
                start += c
        out = torch.cat(parts)                                            # grouped by member
        inverse = torch.argsort(order).to(x.device)
        return out.index_select(0, inverse)

    def member_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of every member, (K, B, C); differentiable w.r.t. ``x``."""
        return torch.stack([self._run(k, x) for k in range(self.K)])

    def train(self, mode: bool = True) -> "R2S":
        """Sets this module's flag only: the network's BatchNorm always uses each member's running stats."""
        self.training = mode
        self.net.eval()
        return self

    def extra_repr(self) -> str:
        probs = "" if self.uniform else f", probabilities={[round(v, 4) for v in self.member_probs.tolist()]}"
        return f"K={self.K}, switch={self.switch!r}, seed={self.seed}, members={self.names}{probs}"


# --------------------------------------------------------------------------------------------
# evaluation
# --------------------------------------------------------------------------------------------


@dataclass
class R2SResult:
    """One attack protocol's outcome. Accuracies in [0, 1], exact over the random switch."""
    protocol: str
    threat_model: str
    adaptive: bool
    attack: str
    expected_acc: float               # mean over members (the expectation over a uniform draw)
    worst_member_acc: float
    per_member_acc: list[float]
    n_images: int
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class R2SReport:
    """All protocols on one candidate set; ``worst_case_adaptive_acc`` is the honest headline."""
    results: list[R2SResult]
    clean_expected_acc: float
    clean_per_member_acc: list[float]
    worst_case_adaptive_acc: float    # per example and member, worst over all adaptive attacks
    sanity: list[SanityCheck]
    config: dict = field(default_factory=dict)
    worst_case_per_member_acc: list[float] = field(default_factory=list)

    def result(self, protocol: str) -> R2SResult:
        for r in self.results:
            if r.protocol == protocol:
                return r
        raise KeyError(f"no result for protocol {protocol!r}")

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results],
                "clean_expected_acc": self.clean_expected_acc,
                "clean_per_member_acc": list(self.clean_per_member_acc),
                "worst_case_adaptive_acc": self.worst_case_adaptive_acc,
                "worst_case_per_member_acc": list(self.worst_case_per_member_acc),
                "sanity": [dataclasses.asdict(s) for s in self.sanity],
                "config": dict(self.config)}

    def to_frame(self):
        """One row per protocol, plus "clean" and "worst_case_adaptive" rows (pandas.DataFrame)."""
        import pandas as pd
        n = self.results[0].n_images if self.results else None
        rows = [{"protocol": "clean", "threat_model": "none", "adaptive": False, "attack": "none",
                 "expected_acc": self.clean_expected_acc, "worst_member_acc": min(self.clean_per_member_acc),
                 "per_member_acc": _fmt_list(self.clean_per_member_acc), "n_images": n}]
        for r in self.results:
            rows.append({"protocol": r.protocol, "threat_model": r.threat_model, "adaptive": r.adaptive,
                         "attack": r.attack, "expected_acc": r.expected_acc,
                         "worst_member_acc": r.worst_member_acc, "per_member_acc": _fmt_list(r.per_member_acc),
                         "n_images": r.n_images})
        if self.worst_case_per_member_acc:
            rows.append({"protocol": "worst_case_adaptive",
                         "threat_model": "per example, the worst of all adaptive attacks above",
                         "adaptive": True, "attack": "all adaptive", "expected_acc": self.worst_case_adaptive_acc,
                         "worst_member_acc": min(self.worst_case_per_member_acc),
                         "per_member_acc": _fmt_list(self.worst_case_per_member_acc), "n_images": n})
        return pd.DataFrame(rows)


def _fmt_list(v: Sequence[float]) -> str:
    return " ".join(f"{a:.4f}" for a in v)


def _weighted_mean(model: R2S, v: torch.Tensor) -> torch.Tensor:
    """``sum_k alpha_k v[k]`` over the first dimension (the plain mean for a uniform switch)."""
    if getattr(model, "uniform", True):
        return v.mean(0)
    p = model.member_probs.to(device=v.device, dtype=v.dtype)
    return (p.view(-1, *([1] * (v.dim() - 1))) * v).sum(0)


def expectation_loss(model: R2S, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Expected cross-entropy over the switch (``alpha``-weighted), per example (B,): the exact EOT objective."""
    logits = model.member_logits(x_adv)                                      # (K, B, C)
    K, B, C = logits.shape
    ce = F.cross_entropy(logits.reshape(K * B, C), y.repeat(K), reduction="none")
    return _weighted_mean(model, ce.view(K, B))


def ensemble_loss(model: R2S, x_adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the members' (``alpha``-weighted) mean logits, per example (B,)."""
    return F.cross_entropy(_weighted_mean(model, model.member_logits(x_adv)), y, reduction="none")


@torch.no_grad()
def member_correct(r2s: R2S, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(K, B) bool: member k classifies example b correctly."""
    return r2s.member_logits(x).argmax(-1) == y.unsqueeze(0)


@contextlib.contextmanager
def _seeded_global_rng(seed: int, device: torch.device):
    """Seed torch's global RNG inside the block (for libraries that use it) and restore it afterwards."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _eot_examples(r2s: R2S, x, y, eps, alpha, steps, eot_samples, seed) -> torch.Tensor:
    import torchattacks
    with _seeded_global_rng(seed, x.device):
        atk = torchattacks.EOTPGD(r2s, eps=eps, alpha=alpha, steps=steps, eot_iter=eot_samples)
        return atk(x, y).detach()


def adaptive_examples(protocol: str, r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, eps: float, alpha: float,
                      steps: int = 20, eot_samples: int = 10, apgd_steps: int = 100, arc_steps: int = 10,
                      arc_topk: int | None = None, generator: torch.Generator | None = None,
                      seed: int = 0) -> tuple[torch.Tensor, str]:
    """One adaptive attack of :data:`ADAPTIVE` on a batch: ``(x_adv, log text)``.

    "expectation" / "ensemble": PGD-``steps`` (step ``alpha``, random start from ``generator``);
    "eot": torchattacks EOTPGD (``eot_samples`` switches per step; global RNG seeded with ``seed``);
    "apgd_ce" / "apgd_dlr": :func:`rst.evaluation.ensemble_attacks.apgd_expectation`, ``apgd_steps`` iterations;
    "arc": :func:`rst.evaluation.ensemble_attacks.arc`, ``arc_steps`` iterations of step ``alpha`` (``arc_topk``:
    ARC-lite, only the top classes' boundaries);
    "autoattack_rand": AutoAttack version='rand'.
    """
    from .ensemble_attacks import apgd_expectation, arc
    if protocol == "expectation":
        return pgd(r2s, x, y, eps, alpha, steps, loss=expectation_loss, generator=generator), ""
    if protocol == "ensemble":
        return pgd(r2s, x, y, eps, alpha, steps, loss=ensemble_loss, generator=generator), ""
    if protocol == "eot":
        return _eot_examples(r2s, x, y, eps, alpha, steps, eot_samples, seed), ""
    if protocol in ("apgd_ce", "apgd_dlr"):
        return apgd_expectation(r2s, x, y, eps, loss=protocol[5:], steps=apgd_steps, seed=seed), ""
    if protocol == "arc":
        return arc(r2s, x, y, eps, steps=arc_steps, step_size=alpha, topk=arc_topk), ""
    if protocol == "autoattack_rand":
        from .autoattack import autoattack_examples
        r2s.reseed(seed)
        return autoattack_examples(r2s, x, y, eps=eps, version="rand", batch_size=len(x), seed=seed)
    raise ValueError(f"unknown adaptive protocol {protocol!r}; known: {ADAPTIVE}")


def describe_adaptive(protocol: str, *, K: int, eps: float, alpha: float, steps: int = 20, eot_samples: int = 10,
                      apgd_steps: int = 100, arc_steps: int = 10, arc_topk: int | None = None,
                      switch: str = "batch") -> str:
    """A one-line description of an adaptive attack with its budget, e.g. for report rows."""
    tail = f" Linf eps={eps:.4g} alpha={alpha:.4g}, 1 restart, no early stop"
    return {"expectation": f"PGD-{steps} on mean CE over {K} members" + tail,
            "ensemble": f"PGD-{steps} on CE of mean logits over {K} members" + tail,
            "eot": f"EOT-PGD-{steps} ({eot_samples} samples/step, switch={switch})" + tail,
            "apgd_ce": f"APGD-CE-{apgd_steps} on mean CE over {K} members, Linf eps={eps:.4g}, 1 restart",
            "apgd_dlr": f"APGD-DLR-{apgd_steps} on mean DLR over {K} members, Linf eps={eps:.4g}, 1 restart",
            "arc": f"ARC-{arc_steps} (step {alpha:.4g}, "
                   + ("all class boundaries" if arc_topk is None else f"ARC-lite: top {arc_topk} classes")
                   + f") over {K} members, Linf eps={eps:.4g}",
            "autoattack_rand": f"AutoAttack rand (APGD-CE, APGD-DLR; EOT=20) Linf eps={eps:.4g}"}[protocol]


def evaluate_r2s(r2s: R2S, x: torch.Tensor, y: torch.Tensor, *, eps: float, steps: int = 20,
                 alpha: float | None = None, eot_samples: int = 10, protocols: Sequence[str] = PROTOCOLS,
                 batch_size: int = 256, seed: int = 0, transfer=None,
                 progress: Callable[[int, int], None] | None = None) -> R2SReport:
    """Evaluate R2S under the paper's non-adaptive protocol and under adaptive attacks (spec §5).

    Threat model: L-inf ball of radius ``eps`` in [0, 1] pixel space. Every adversarial batch is
    evaluated on *every* member, so the expected accuracy over the random switch is exact.

    Protocols (``protocols``, any subset, in this order):
        "paper"        non-adaptive (Fu et al. 2021): the K x K transfer matrix without early stop
                       (attack member i with PGD, answer with member j); expected = mean of all
                       cells, per member = column means (target j, random source).
        "expectation"  PGD on the mean CE over members (exact EOT; Athalye et al. 2018,
                       arXiv:1802.00420).
        "ensemble"     PGD on the CE of the mean logits.
        "eot"          torchattacks EOTPGD with ``eot_samples`` sampled switches per step
                       (the module's own ``switch``; its generator is reseeded with ``seed``).
        "autoattack_rand"  AutoAttack version='rand' (Croce & Hein 2020, arXiv:2003.01690): APGD-CE
                       and APGD-DLR with EOT=20, 100 iterations; slow on a CPU (use few images).

    ``worst_case_adaptive_acc``: an example counts as robust for member k only if it survives
    every adaptive attack's x_adv on member k (Tramèr et al. 2020, arXiv:2002.08347: report the
    per-example worst case over attacks); the expectation over members is reported.

    Arguments:
        r2s (R2S): the defence. x (Tensor): (N, C, H, W) in [0, 1] (any device). y (Tensor): (N,).
        eps (float): radius. steps (int): PGD / EOT-PGD steps. (Default: 20)
        alpha (float | None): step size; None means ``eps / 4`` (8/255 -> 2/255). (Default: None)
        eot_samples (int): EOT samples per step of "eot". (Default: 10)
        batch_size (int): images per attack batch. (Default: 256)
        seed (int): seeds every attack's random start (a fresh generator per protocol). (Default: 0)
        transfer (TransferResult | None): the "paper" protocol's matrix when it is already computed
            (the zoo's transfer report: the same members, images and attack, no early stop); checked
            against this call and refused if it differs. None: computed here. (Default: None)
        progress: ``progress(done, total)`` after every batch of every protocol.

    Example::
        >>> report = evaluate_r2s(R2S(cs), x, y, eps=8/255, protocols=("paper", "expectation", "ensemble"))
        >>> print(report.to_frame()[["protocol", "expected_acc", "worst_member_acc"]])
    """
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ValueError(f"unknown protocols {unknown}; known: {PROTOCOLS}")
    protocols = [p for p in PROTOCOLS if p in protocols]
    alpha = eps / 4 if alpha is None else alpha
    device = next(r2s.net.parameters()).device
    N, K = len(x), r2s.K
    attack = AttackConfig("pgd", eps=eps, alpha=alpha, steps=steps)
    batches = [(i, min(i + batch_size, N)) for i in range(0, N, batch_size)]
    total = len(batches) * (1 + len(protocols))
    tick = ticker(progress, total)

    was_training = r2s.training
    r2s.eval()
    try:
        clean = torch.zeros(K, N, dtype=torch.bool)
        for a, b in batches:
            clean[:, a:b] = member_correct(r2s, x[a:b].to(device), y[a:b].to(device)).cpu()
            tick()

        results, correct = [], {}
        for proto in protocols:
            if proto == "paper":
                from .metrics import transfer_matrix
                tr = _check_transfer(transfer, r2s, N, attack) if transfer is not None else \
                    transfer_matrix(r2s, x, y, attack, early_stop=False, device=device, batch_size=batch_size, seed=seed)
                for _ in batches:
                    tick()
                m = tr.matrix
                per_member = _weighted_mean(r2s, m).tolist()         # column j: target j, source drawn by alpha
                results.append(R2SResult(proto, THREAT_MODELS[proto], False, tr.attack, _expected_paper(r2s, m),
                                         float(min(per_member)), per_member, N,
                                         {"transfer_matrix": m.tolist(), "transfer_label": tr.label,
                                          "diagonal_mean": float(m.diagonal().mean()),
                                          "off_diagonal_mean": float((m.sum() - m.diagonal().sum()) / max(1, K * K - K))}))
                continue
            ok = torch.zeros(K, N, dtype=torch.bool)
            g = torch.Generator(device=device).manual_seed(seed)
            if proto == "eot":
                r2s.reseed(seed)
            log = []
            for bi, (a, b) in enumerate(batches):
                xb, yb = x[a:b].to(device), y[a:b].to(device)
                x_adv, text = adaptive_examples(proto, r2s, xb, yb, eps=eps, alpha=alpha, steps=steps,
                                                eot_samples=eot_samples, generator=g, seed=seed + bi)
                if text:
                    log.append(text)
                ok[:, a:b] = member_correct(r2s, x_adv, yb).cpu()
                tick()
            correct[proto] = ok
            per_member = ok.float().mean(1).tolist()
            desc = describe_adaptive(proto, K=K, eps=eps, alpha=alpha, steps=steps, eot_samples=eot_samples,
                                     switch=r2s.switch)
            extra = {"log": "\n".join(log)} if log else {}
            results.append(R2SResult(proto, THREAT_MODELS[proto], True, desc, _expected(r2s, ok),
                                     float(min(per_member)), per_member, N, extra))
    finally:
        r2s.train(was_training)

    if correct:
        worst = torch.stack(list(correct.values())).all(0)                     # (K, N)
        worst_per_member = worst.float().mean(1).tolist()
        worst_acc = _expected(r2s, worst)
    else:
        worst_per_member, worst_acc = [], float("nan")
    clean_per_member = clean.float().mean(1).tolist()
    report = R2SReport(results, _expected(r2s, clean), clean_per_member, worst_acc, [],
                       {"eps": eps, "alpha": alpha, "steps": steps, "eot_samples": eot_samples,
                        "protocols": list(protocols), "batch_size": batch_size, "seed": seed,
                        "members": list(r2s.members), "names": list(r2s.names),
                        "keep_ratios": list(r2s.keep_ratios), "switch": r2s.switch, "n_images": N,
                        "probabilities": r2s.member_probs.tolist()},
                       worst_per_member)
    report.sanity = _report_checks(report, clean, correct, N)
    return report


def _expected(r2s: R2S, ok: torch.Tensor) -> float:
    """Expected accuracy over the switch of per-member results ``ok`` (K, N): ``mean_n sum_k alpha_k ok[k, n]``."""
    if r2s.uniform:
        return float(ok.float().mean())
    return float(_weighted_mean(r2s, ok.float()).mean())


def _expected_paper(r2s: R2S, m: torch.Tensor) -> float:
    """The paper protocol's expected accuracy: source i and target j drawn independently, ``sum_ij a_i a_j m_ij``."""
    if r2s.uniform:
        return float(m.mean())
    p = r2s.member_probs.to(m.dtype)
    return float(p @ m @ p)


def _check_transfer(tr, r2s: R2S, n: int, attack: AttackConfig):
    """``tr`` if it is the paper protocol's matrix for this call, else a ValueError saying why not."""
    want = dataclasses.replace(attack, early_stop=False).describe()
    problems = [what for what, bad in (
        (f"members {tr.names} != {list(r2s.names)}", list(tr.names) != list(r2s.names)),
        (f"{tr.n_images} images != {n}", tr.n_images != n),
        (f"attack {tr.attack!r} != {want!r}", tr.attack != want),
        ("it was computed with early stop", tr.early_stop)) if bad]
    if problems:
        raise ValueError("transfer matrix does not match this R2S evaluation: " + "; ".join(problems))
    return tr


def _report_checks(report: R2SReport, clean: torch.Tensor, correct: dict, n: int) -> list[SanityCheck]:
    """Consistency checks that need no extra attack (see rst.evaluation.sanity for the attack-based ones)."""
    checks = []
    tol = max(0.01, 1.0 / max(n, 1))
    adaptive = [r for r in report.results if r.adaptive]
    paper = next((r for r in report.results if r.protocol == "paper"), None)
    if paper is not None and adaptive:
        best = min(adaptive, key=lambda r: r.expected_acc)
        ok = best.expected_acc <= paper.expected_acc + tol
        checks.append(SanityCheck(
            "adaptive_not_weaker_than_transfer", ok,
            f"strongest adaptive attack ({best.protocol}) expected acc {best.expected_acc:.4f} vs the paper's "
            f"non-adaptive protocol {paper.expected_acc:.4f} (tolerance {tol:.4f})"
            + ("" if ok else ": an adaptive white-box attack should never be weaker than transfer; "
                             "the attack is not converging (too few steps?) or gradients are masked")))
    for r in adaptive:
        over = [k for k, (a, c) in enumerate(zip(r.per_member_acc, report.clean_per_member_acc)) if a > c + tol]
        checks.append(SanityCheck(
            f"robust_le_clean[{r.protocol}]", not over,
            "robust accuracy <= clean accuracy for every member" if not over else
            f"members {over} are more accurate under {r.protocol} than on clean inputs: the attack is broken"))
    if "expectation" in correct and "eot" in correct:
        e = next(r for r in adaptive if r.protocol == "expectation").expected_acc
        s = next(r for r in adaptive if r.protocol == "eot").expected_acc
        tol2 = max(0.02, 2.0 / max(n, 1))
        ok = e <= s + tol2
        checks.append(SanityCheck(
            "exact_expectation_not_weaker_than_sampled_eot", ok,
            f"exact expectation attack {e:.4f} vs sampled EOT {s:.4f} (tolerance {tol2:.4f})"
            + ("" if ok else ": the exact expectation should be at least as strong as its sampled estimate")))
    return checks


__all__ = ["ADAPTIVE", "R2S", "R2SResult", "R2SReport", "adaptive_examples", "describe_adaptive", "evaluate_r2s", "expectation_loss", "ensemble_loss",
           "member_correct", "PROTOCOLS", "SWITCHES", "THREAT_MODELS"]

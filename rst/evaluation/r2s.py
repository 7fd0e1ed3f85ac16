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
from typing import Iterator, Sequence

import torch
import torch.nn as nn

from rst.network.masked import masked_layers
from rst.network.bit_packing import bit_shift_table, pack_bits, unpack_bits
from rst.network.folded import folded_copy
from rst.network.tickets import CandidateSet, _bn_buffers
from rst.network.models import build_network
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


def _checked_members(cs: CandidateSet, members: list[int] | None) -> list[int]:
    """The ticket indices to switch between (default: all of ``cs``), checked non-empty and in range."""
    members = list(range(len(cs))) if members is None else [int(m) for m in members]
    if not members:
        raise ValueError("R2S needs at least one member")
    bad = [m for m in members if not 0 <= m < len(cs)]
    if bad:
        raise ValueError(f"member indices {bad} out of range for a candidate set of {len(cs)} tickets")
    return members


def _recorded_probabilities(cs: CandidateSet, members: list[int]) -> list[float] | None:
    """The candidate set's recorded switch probabilities of ``members``, renormalised; None if none or all zero."""
    if cs.probabilities is None:
        return None
    recorded = torch.tensor([cs.probabilities[m] for m in members], dtype=torch.float64)
    return (recorded / recorded.sum()).tolist() if recorded.sum() > 0 else None


def _ticket_mask(cs: CandidateSet, m: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Ticket ``m``'s mask of layer ``name``, checked to have the layer's ``shape``."""
    mask = cs.tickets[m].masks.get(name)
    if mask is None or tuple(mask.shape) != shape:
        got = None if mask is None else tuple(mask.shape)
        raise ValueError(f"ticket {m} has mask shape {got} for layer {name!r}, expected {shape}")
    return mask


def _ticket_bn_stat(cs: CandidateSet, m: int, key: str) -> torch.Tensor:
    """Ticket ``m``'s BatchNorm statistic ``key`` (ValueError when it has none)."""
    if key not in cs.tickets[m].bn_stats:
        raise ValueError(f"ticket {m} has no BatchNorm statistic {key!r}")
    return cs.tickets[m].bn_stats[key]


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
        keep_member_weights (bool): keep every member's ``w * mask`` (K float copies of the masked
            layers) instead of the active member's only, so that a member switch costs nothing:
            for attacks on the expectation, which visit every member at every step. (Default: False)

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
                 probabilities: Sequence[float] | None = None, keep_member_weights: bool = False):
        super().__init__()
        if switch not in SWITCHES:
            raise ValueError(f"switch must be one of {SWITCHES}, got {switch!r}")
        members = _checked_members(cs, members)
        self.spec = cs.spec
        self.switch = switch
        self.members = members
        self.names = [cs.tickets[m].name or f"keep{cs.tickets[m].keep_ratio:g}" for m in members]
        self.keep_ratios = [float(cs.tickets[m].keep_ratio) for m in members]
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.last_members: torch.Tensor | None = None   # (B,) member of each example of the last call
        self.set_probabilities(_recorded_probabilities(cs, members) if probabilities is None else probabilities)

        self.net = build_network(cs.spec, device=device).eval()
        dev = next(self.net.parameters()).device
        self._layers = dict(masked_layers(self.net))
        self._zero_scores(dev, like_weight=False)
        # K masks per layer, bit-packed, and the bit-shift table that unpacks them (non-persistent
        # buffers, so that .to(device) moves them and a member switch never copies anything from the host)
        self.register_buffer("bit_shifts", bit_shift_table(dev), persistent=False)
        self._register_masks(cs, dev)
        self._register_bn_stats(cs, dev)

        self._active: int | None = None
        self._weights: dict[str, torch.Tensor] = {}
        self.keep_member_weights = bool(keep_member_weights)
        self._kept: dict[int, tuple[dict, dict]] = {}    # member -> (its masks, its w * mask) when kept
        self._fast: dict[int, nn.Module] = {}            # member -> its folded copy (fast_members)
        self._fast_depth = 0
        self._fixed: list[int] = []
        self._activate(0)
        self.eval()    # an inference-only module

    def _zero_scores(self, dev: torch.device, like_weight: bool) -> None:
        """Replace every layer's scores (never used: the masks are fixed) by a zero-storage view on ``dev``."""
        for layer in self._layers.values():
            dtype = layer.weight.dtype if like_weight else None       # None: torch's default dtype
            layer.scores = nn.Parameter(torch.zeros((), device=dev, dtype=dtype).expand(layer.scores.shape),
                                        requires_grad=False)

    def _register_masks(self, cs: CandidateSet, dev: torch.device) -> None:
        """Register each layer's K bit-packed member masks as buffer ``packed_mask_i``, (K, ceil(n / 8)) uint8."""
        self._shapes: dict[str, tuple[int, ...]] = {}
        self._mask_buffers: dict[str, str] = {}
        for i, (name, layer) in enumerate(self._layers.items()):
            shape = tuple(layer.scores.shape)
            rows = [pack_bits(_ticket_mask(cs, m, name, shape).bool()) for m in self.members]
            self._shapes[name] = shape
            self._mask_buffers[name] = f"packed_mask_{i}"
            self.register_buffer(f"packed_mask_{i}", torch.stack(rows).to(dev), persistent=False)

    def _register_bn_stats(self, cs: CandidateSet, dev: torch.device) -> None:
        """Register each BatchNorm buffer's K member values as buffer ``bn_stats_i``, (K, C)."""
        self._bn_modules: dict[str, tuple[nn.Module, str]] = {}
        self._bn_buffers: dict[str, str] = {}
        for i, (key, module, buf) in enumerate(_bn_buffers(self.net)):
            stats = [_ticket_bn_stat(cs, m, key).to(getattr(module, buf).dtype) for m in self.members]
            self._bn_modules[key] = (module, buf)
            self._bn_buffers[key] = f"bn_stats_{i}"
            self.register_buffer(f"bn_stats_{i}", flush_subnormal_(torch.stack(stats)).to(dev),   # as apply_ticket
                                 persistent=False)

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
        self._zero_scores(next(self.net.parameters()).device, like_weight=True)
        for layer in self._layers.values():
            layer._cached_weight = None
        active, self._active = self._active, None
        self._weights, self._kept, self._fast = {}, {}, {}
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
        masks, weights = self._kept.get(k) or self._member_weights(k)
        if self.keep_member_weights:
            self._kept[k] = (masks, weights)
        for name, layer in self._layers.items():
            layer.fixed_mask = masks[name]
        self._weights = weights
        for key, (module, buf) in self._bn_modules.items():
            # rebind, never copy_ in place: autograd may still hold the previous member's statistics
            setattr(module, buf, getattr(self, self._bn_buffers[key])[k])
        self._active = k

    def _member_weights(self, k: int) -> tuple[dict, dict]:
        """Member ``k``'s masks and ``w * mask`` per masked layer, unpacked from its bits."""
        masks, weights = {}, {}
        for name, layer in self._layers.items():
            masks[name] = mask = unpack_bits(getattr(self, self._mask_buffers[name])[k], self._shapes[name],
                                             self.bit_shifts)
            # the same expression as MaskedMixin.effective_weight: bitwise equal to plain inference
            weights[name] = (layer.weight * mask.to(layer.weight.dtype)).detach()
        return masks, weights

    def _install(self, k: int) -> None:
        """Member ``k`` active, its ``w * mask`` installed as every masked layer's cached weight (again at
        every call: rst.network.masked.cached_masks clears it on exit)."""
        self._activate(k)
        for name, layer in self._layers.items():
            layer._cached_weight = self._weights[name]

    def _run(self, k: int, x: torch.Tensor) -> torch.Tensor:
        if self._fast_depth:
            return self._fast_member(k)(x)
        self._install(k)
        if self.net.training:
            self.net.eval()
        return self.net(x)

    @property
    def fixed_member(self) -> int | None:
        """The member every forward uses inside :meth:`use_member`, else None (the switch draws)."""
        return self._fixed[-1] if self._fixed else None

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

    @contextlib.contextmanager
    def fast_members(self) -> Iterator["R2S"]:
        """Inside the block each member runs as its BN-folded, channels-last plain copy
        (:func:`rst.network.folded.folded_copy`, built once per member): the same function up to float
        rounding, about 2x faster forward + input gradient under bf16 autocast on a CPU. For
        generating attacks; a verdict is the members' own (``rst.evaluation.verdicts`` scores on
        these copies and rechecks every near-tie in fp32)."""
        self._fast_depth += 1
        try:
            yield self
        finally:
            self._fast_depth -= 1

    def build_fast_members(self) -> "R2S":
        """Build every member's folded copy now instead of on first use inside :meth:`fast_members`:
        torch.fx traces with a process-wide patch of ``nn.Module.__call__``, so copies of this module
        that run in two threads at once must have theirs built first."""
        for k in range(self.K):
            self._fast_member(k)
        return self

    def _fast_member(self, k: int) -> nn.Module:
        if k not in self._fast:
            self._install(k)
            self._fast[k] = folded_copy(self.net)
        return self._fast[k]

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


__all__ = ["ADAPTIVE", "R2S", "PROTOCOLS", "SWITCHES", "THREAT_MODELS"]

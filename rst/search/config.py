"""The search's recipe: :class:`SearchConfig` (everything a search is a function of, with units, checked
when built), the named recipes :data:`PRESETS` (the paper's, Fashion-MNIST ones, "tiny" for tests) and
:func:`preset`, and :data:`LATER_FIELDS` (fields added after the first zoos were built).

``rst.search.loop`` and ``rst.search`` re-export every name here.

    >>> cfg = preset("fmnist", keep_ratio=0.05)
    >>> SearchConfig.from_dict(cfg.to_dict()) == cfg
    True
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from . import boosted_attack  # noqa: F401  (registers the "boosted" inner attack)
from .guard import GUARDS
from .inner import INNER_ATTACKS, build_inner_attack
from rst.evaluation.attacks import AttackConfig
from rst.network.models import NetworkSpec
from rst.runtime.config import check_field_types, check_known_fields, strict_from_dict
from rst.runtime.speed import PRECISIONS


# Fields added to SearchConfig after the first zoos were built; at their defaults they leave a
# record as it was before they existed.
LATER_FIELDS = ("boost_members", "boost_wrong_class", "boost_warm_start", "boost_inner")
BOOST_INNER = ("pgd", "apgd")            # how the boosted inner attack ascends its loss


@dataclass(frozen=True)
class SearchConfig:
    """Everything a search is a function of, with units. Written into every output.

    Network: ``arch``, ``dataset``, ``width``, ``init``, ``seed``, ``granularity`` (see NetworkSpec).
    Ticket: ``keep_ratio`` (fraction of weights kept per layer), ``scope`` "layer" (the paper:
    the same ratio in every layer) or "global" (network-wide top-k, a departure from the paper).
    """
    # the random network
    arch: str = "fmnist_conv4"
    dataset: str = "fashion_mnist"
    width: float = 1.0
    init: str = "signed_kaiming_constant"
    seed: int = 0                        # weights, scores, data split, shuffling, attack starts
    granularity: str = "element"
    # the ticket
    keep_ratio: float = 0.1              # fraction of weights kept
    scope: str = "layer"                 # "layer" | "global"
    # optimisation of the scores (SGD)
    epochs: int = 30
    batch_size: int = 256                # images per step
    lr: float = 0.1                      # at batch 256; scaled linearly with batch_size if scale_lr
    scale_lr: bool = False
    momentum: float = 0.9
    weight_decay: float = 5e-4           # on the scores
    lr_milestones: tuple[float, ...] = (0.5, 0.75)   # fractions of `epochs` where lr *= lr_gamma
    lr_gamma: float = 0.1
    # inner attack (pixel space [0, 1])
    inner_attack: str = "pgd"            # a key of rst.search.inner.INNER_ATTACKS: pgd | fgsm | fgsm_rs | n_fgsm | free | none
    eps: float = 8 / 255
    alpha: float = 2 / 255               # step size
    steps: int = 7                       # PGD steps; replays per batch for "free"
    attack_bn_mode: str = "train"        # BN during the inner attack: "train" (paper) | "eval"
    # boosted search (rst.search.boosted): inner attack "boosted" attacks these frozen members with the new one
    boost_members: str = ""              # candidate-set file of the earlier members ("" : none)
    boost_wrong_class: float = 0.0       # weight of BARRE's wrong-class term in the boosted attack's loss
    boost_warm_start: bool = True        # member m's scores start from member m-1's (False: fresh)
    boost_inner: str = "pgd"             # the boosted attack's ascent: PGD (step alpha) or APGD (its own step sizes)
    # data
    val_size: int = 5000                 # images held out of the training set for model selection
    train_subset: int | None = None      # keep only this many training images (reduced runs)
    augment: bool = True
    # model selection: never the test set
    selection: str = "val"               # "val": best robust accuracy on the validation split | "last"
    val_steps: int = 10                  # PGD steps of the validation attack
    val_images: int = 1000               # validation images attacked per epoch
    # catastrophic-overfitting guard (rst.search.guard): after each validation
    guard: str = "collapse"              # a key of rst.search.guard.GUARDS: "collapse" | "none"
    guard_drop: float = 0.15             # val robust accuracy this far (fraction) under its best = collapse
    guard_fallback: str = "pgd"          # the inner attack to go on with after a collapse
    # speed knobs (no effect on the maths beyond numerics): rst.runtime.speed
    precision: str = "auto"              # "auto" (per device: bf16 + channels_last where native) | "fp32" | "bf16"
    channels_last: bool = False          # with precision "fp32"/"bf16" ("auto" decides itself)
    compile: bool = False                # torch.compile the network for the attack and the update

    def __post_init__(self):
        check_field_types(self)   # width='abc', eps=inf, augment=0: refused before the range checks below
        self.network_spec()  # validates arch, dataset, init, granularity, width
        checks = [
            (0 < self.keep_ratio <= 1, f"keep_ratio must be in (0, 1], got {self.keep_ratio}"),
            (self.scope in ("layer", "global"), f"scope must be 'layer' or 'global', got {self.scope!r}"),
            (self.inner_attack in INNER_ATTACKS, f"inner_attack must be one of {tuple(INNER_ATTACKS)}, "
                                                 f"got {self.inner_attack!r}"),
            (self.guard in GUARDS, f"guard must be one of {tuple(GUARDS)}, got {self.guard!r}"),
            (self.guard_fallback in INNER_ATTACKS, f"guard_fallback must be one of {tuple(INNER_ATTACKS)}"),
            (0 < self.guard_drop <= 1, f"guard_drop must be in (0, 1], got {self.guard_drop}"),
            (self.attack_bn_mode in ("train", "eval"), "attack_bn_mode must be 'train' or 'eval'"),
            (self.boost_inner in BOOST_INNER, f"boost_inner must be one of {BOOST_INNER}, got {self.boost_inner!r}"),
            (self.selection in ("val", "last"), "selection must be 'val' or 'last'"),
            (self.epochs >= 1 and self.batch_size >= 1 and self.steps >= 1, "epochs, batch_size, steps must be >= 1"),
            (self.eps >= 0 and self.alpha >= 0, "eps and alpha must be >= 0"),
            (self.train_subset is None or self.train_subset >= 1, f"train_subset must be >= 1 (or None: all "
                                                                 f"the images), got {self.train_subset}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.selection == "last" or self.val_size > 0, "selection='val' needs val_size > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)

    def network_spec(self) -> NetworkSpec:
        return NetworkSpec(self.arch, dataset=self.dataset, width=self.width, init=self.init,
                           seed=self.seed, granularity=self.granularity)

    def describe_inner_attack(self) -> str:
        """e.g. ``'PGD-7 Linf eps=0.1 alpha=0.025, 1 restart, no early stop'``."""
        return build_inner_attack(self).describe()

    def val_attack_config(self) -> AttackConfig:
        return AttackConfig(name="pgd", eps=self.eps, alpha=self.eps / 4, steps=self.val_steps)

    def effective_lr(self) -> float:
        return self.lr * (self.batch_size / 256 if self.scale_lr else 1.0)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["lr_milestones"] = list(self.lr_milestones)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SearchConfig":
        d = dict(d)
        if "lr_milestones" in d:
            d["lr_milestones"] = tuple(d["lr_milestones"])
        return strict_from_dict(cls, d, "SearchConfig")

    def replace(self, **changes) -> "SearchConfig":
        check_known_fields(type(self), changes, "SearchConfig")
        return dataclasses.replace(self, **changes)

    @classmethod
    def recipe(cls, search_config: dict) -> dict:
        """The config fields of a ticket's recorded ``search_config`` (without ``best_epoch`` and the
        other notes a search adds, e.g. ``batched_with``)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in search_config.items() if k in names}

    @classmethod
    def without_later_defaults(cls, config: dict) -> dict:
        """``config`` without the fields added to SearchConfig after the first zoos were built
        (``LATER_FIELDS``) where they hold their defaults: a record made before those fields existed
        and one made since at the defaults then compare, stamp and key alike."""
        defaults = cls().to_dict()
        return {k: v for k, v in config.items() if not (k in LATER_FIELDS and v == defaults[k])}


PRESETS: dict[str, SearchConfig] = {
    # The paper's recipe exactly (§2 of the spec): 160 epochs, lr 0.1 x0.1 at 80/120, batch 256,
    # wd 5e-4 on scores, PGD-7 eps 8/255 step 2/255 with BN in train mode; selection on a
    # held-out validation split instead of the test set.
    "paper-cifar10-resnet18": SearchConfig(arch="resnet18", dataset="cifar10", epochs=160, batch_size=256,
                                           lr=0.1, lr_milestones=(0.5, 0.75), weight_decay=5e-4,
                                           inner_attack="pgd", eps=8 / 255, alpha=2 / 255, steps=7,
                                           val_size=5000, val_steps=20),
    "paper-cifar10-wrn34": SearchConfig(arch="wrn34_10", dataset="cifar10", epochs=160, batch_size=256,
                                        lr=0.1, lr_milestones=(0.5, 0.75), weight_decay=5e-4,
                                        inner_attack="pgd", eps=8 / 255, alpha=2 / 255, steps=7,
                                        val_size=5000, val_steps=20),
    # Fashion-MNIST at eps = 0.1 (a common L-inf budget for this data set), PGD-7 step eps/4.
    "fmnist": SearchConfig(arch="fmnist_conv4", dataset="fashion_mnist", epochs=30, batch_size=256, lr=0.1,
                           inner_attack="pgd", eps=0.1, alpha=0.025, steps=7, val_size=5000, val_steps=10),
    # The same task at a budget a 2-core CPU finishes in minutes per ticket (no GPU in this
    # workplace): half-width Conv-4, 10k training images, PGD-3 (step eps/2.5), 6 epochs.
    "fmnist-cpu": SearchConfig(arch="fmnist_conv4", dataset="fashion_mnist", width=0.5, epochs=6, batch_size=128,
                               lr=0.1, lr_milestones=(0.67,), inner_attack="pgd", eps=0.1, alpha=0.04, steps=3,
                               train_subset=10000, val_size=5000, val_steps=10, val_images=500),
    # The fast recipe for a 2-core CPU (README "Speed"): the same task and network as "fmnist" with the
    # single-step N-FGSM inner attack (de Jorge et al. 2022) under the catastrophic-overfitting guard,
    # bf16 autocast + channels_last where the CPU has native bf16. Validation stays PGD-10 in fp32.
    "fmnist-fast": SearchConfig(arch="fmnist_conv4", dataset="fashion_mnist", epochs=15, batch_size=256, lr=0.1,
                                inner_attack="n_fgsm", eps=0.1, alpha=0.025, steps=7, val_size=5000, val_steps=10,
                                val_images=500, guard="collapse", precision="auto"),
    # Seconds on a CPU, for tests and demos: synthetic data, a quarter-width Conv-4.
    "tiny": SearchConfig(arch="fmnist_conv4", dataset="synthetic", width=0.25, keep_ratio=0.5, epochs=3,
                         batch_size=64, lr=0.1, lr_milestones=(), inner_attack="pgd", eps=0.1, alpha=0.05,
                         steps=2, val_size=128, val_steps=3, val_images=128, augment=False),
}


def preset(name: str, **overrides) -> SearchConfig:
    """A named recipe, optionally with fields replaced: ``preset("fmnist", keep_ratio=0.05)``."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    return PRESETS[name].replace(**overrides) if overrides else PRESETS[name]

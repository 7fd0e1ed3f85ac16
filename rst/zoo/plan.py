"""What a zoo build makes: :class:`ZooPlan` (a preset, its keep ratios, the evaluation sizes) and the
``python -m rst zoo build`` command line that makes it."""
from __future__ import annotations

from dataclasses import dataclass

from rst.search.loop import SearchConfig, preset

DEFAULT_KEEP_RATIOS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7)


@dataclass(frozen=True)
class ZooPlan:
    """What a build makes: a preset, its keep ratios, how many test images each evaluation uses."""
    preset: str
    keep_ratios: tuple[float, ...] = DEFAULT_KEEP_RATIOS
    zoo_id: str | None = None
    overrides: tuple[tuple[str, object], ...] = ()
    eval_images: int | None = None        # test images for curve / PGD-20 metrics (None: all)
    transfer_images: int = 1000
    r2s_images: int = 500
    r2s_protocols: tuple[str, ...] = ("paper", "expectation", "ensemble", "eot")   # rst.evaluation.r2s.PROTOCOLS
    autoattack_images: int = 200          # 0 skips the AutoAttack report
    autoattack_tickets: int | None = None  # AutoAttack the N tickets best under PGD-20 (None: all)
    subset_images: int = 1000             # the test subset shipped in assets/ for the app

    def __post_init__(self):
        for r in self.keep_ratios:    # an unknown preset, a bad override or keep ratio: refused before any work
            self.config(keep_ratio=r)

    @property
    def id(self) -> str:
        return self.zoo_id or self.preset

    def config(self, **extra) -> SearchConfig:
        return preset(self.preset, **dict(self.overrides), **extra)

    def command(self) -> str:
        """The ``python -m rst zoo build`` command line that makes this plan's candidate set."""
        parts = [f"python -m rst zoo build {self.preset}", "--keep-ratios " + ",".join(f"{r:g}" for r in self.keep_ratios)]
        if self.zoo_id:
            parts.append(f"--id {self.zoo_id}")
        parts += [f"--set {k}={v!r}" for k, v in self.overrides]
        if self.eval_images is not None:
            parts.append(f"--eval-images {self.eval_images}")
        parts += [f"--transfer-images {self.transfer_images}", f"--r2s-images {self.r2s_images}",
                  f"--autoattack-images {self.autoattack_images}", f"--subset-images {self.subset_images}"]
        if self.r2s_protocols != ZooPlan.r2s_protocols:
            parts.append("--r2s-protocols " + ",".join(self.r2s_protocols))
        if self.autoattack_tickets is not None:
            parts.append(f"--autoattack-tickets {self.autoattack_tickets}")
        return " ".join(parts)

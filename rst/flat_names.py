"""The flat module names of the releases before the subpackages (``rst.masks``, ``rst.inner``, ...),
kept as aliases: ``import rst.masks`` and ``from rst.inner import register_inner_attack`` give the very
module object that now lives in its layer (``rst.network.masks``, ``rst.search.inner``), so code
written against the old names, monkeypatches included, keeps working. ``rst.search``, ``rst.data``,
``rst.zoo`` and ``rst.cli`` are subpackages that re-export their old module's names.

The alias is the one import hook rst installs (:func:`install`, called by ``import rst``); it maps
exactly the names below and nothing else.
"""
from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

MOVED = {
    "config": "runtime.config",
    "atomic": "runtime.atomic",
    "runlock": "runtime.runlock",
    "progress": "runtime.progress",
    "provenance": "runtime.provenance",
    "device": "runtime.device",
    "allocator": "runtime.allocator",
    "workers": "runtime.workers",
    "speed": "runtime.speed",
    "checkpoint": "runtime.checkpoint",
    "masked": "network.masked",
    "models": "network.models",
    "weights": "network.weights",
    "masks": "network.masks",
    "mask_checks": "network.mask_checks",
    "attacks": "evaluation.attacks",
    "ensemble_attacks": "evaluation.ensemble_attacks",
    "autoattack": "evaluation.autoattack",
    "per_image": "evaluation.per_image",
    "evaluate": "evaluation.metrics",
    "sanity": "evaluation.sanity",
    "switch_probabilities": "evaluation.switch_probabilities",
    "r2s": "evaluation.r2s",
    "compare": "evaluation.compare",
    "reports": "evaluation.reports",
    "inner": "search.inner",
    "guard": "search.guard",
    "boosted_attack": "search.boosted_attack",
    "boosted": "search.boosted",
    "selection": "search.selection",
    "batched": "search.batched",
    "train": "search.train",
    "distributed": "search.distributed",
    "across_networks": "zoo.across_networks",
    "cli_input": "cli.input",
    "eval_cli": "cli.eval_commands",
}


class FlatNames(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``rst.<old name>`` and loads it as the module it moved to."""

    def find_spec(self, fullname, path=None, target=None):
        old = fullname.partition("rst.")[2] if fullname.startswith("rst.") else None
        return importlib.util.spec_from_loader(fullname, self) if old in MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(f"rst.{MOVED[spec.name[len('rst.'):]]}")
        spec.loader_state = module.__spec__         # its own spec, given back in exec_module
        return module

    def exec_module(self, module):
        # The module ran when it was imported under its own name; the import system has just set
        # its __spec__ to the alias's: give it back its own, which its relative imports rely on.
        module.__spec__ = module.__spec__.loader_state


def install() -> None:
    if not any(isinstance(f, FlatNames) for f in sys.meta_path):
        sys.meta_path.insert(0, FlatNames())


def resolve(name: str):
    """``rst.<name>`` as an attribute (``rst.masks`` after a bare ``import rst``), else AttributeError."""
    if name in MOVED:
        return importlib.import_module(f"rst.{name}")
    raise AttributeError(f"module 'rst' has no attribute {name!r}")

"""``python -m rst eval {accuracy,curve,transfer,r2s,autoattack} FILE``: evaluation commands over a mask file.

    python -m rst eval accuracy tickets.rst.safetensors --attack pgd --steps 20
    python -m rst eval curve tickets.rst.safetensors --eps 0.1 --steps 20 --out runs/eval
    python -m rst eval transfer tickets.rst.safetensors [--early-stop]
    python -m rst eval r2s tickets.rst.safetensors --members 0,1,2 --protocols paper,expectation,ensemble,eot
    python -m rst eval autoattack tickets.rst.safetensors --version standard --images 1000

The report commands write ``NAME.json`` (numbers, configuration, provenance), ``NAME.csv`` and ``NAME.png``
into ``--out`` through :mod:`rst.evaluation.reports`, print a compact table and every failed sanity check.
Each command is a module of its own (``eval_accuracy``, ``eval_curve``, ``eval_transfer``, ``eval_r2s`` with
``eval_r2s_compare``, ``eval_autoattack``; what they share: ``eval_images``, ``eval_setup``, ``eval_output``);
``rst.cli.commands`` registers them all with :func:`add_eval_commands` (``python -m rst eval`` is the one
entry point).
"""
from __future__ import annotations

from .eval_accuracy import add_accuracy_command, cmd_accuracy  # noqa: F401 (re-exported)
from .eval_autoattack import add_autoattack_command, cmd_autoattack  # noqa: F401 (re-exported)
from .eval_curve import add_curve_command, cmd_curve  # noqa: F401 (re-exported)
from .eval_images import (DEFAULT_IMAGES, SUBSET_ENV, default_subset_path,  # noqa: F401 (re-exported)
                          evaluation_images, test_data)
from .eval_r2s import add_r2s_command, cmd_r2s  # noqa: F401 (re-exported)
from .eval_r2s_compare import cmd_r2s_all  # noqa: F401 (re-exported)
from .eval_setup import default_eps  # noqa: F401 (re-exported)
from .eval_transfer import add_transfer_command, cmd_transfer  # noqa: F401 (re-exported)


def add_eval_commands(eval_subparsers) -> None:
    """Register ``accuracy``, ``curve``, ``transfer``, ``r2s`` and ``autoattack`` on the ``eval`` subparser group."""
    add_accuracy_command(eval_subparsers)
    add_curve_command(eval_subparsers)
    add_transfer_command(eval_subparsers)
    add_r2s_command(eval_subparsers)
    add_autoattack_command(eval_subparsers)

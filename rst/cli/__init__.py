"""Layer 7, the command line: ``python -m rst``.

    commands           the entry point: the parser put together from the groups below, one-line refusals
    input              bad input refused in one line: UsageError, argparse value types, comma-separated lists
    progress_bars      the tqdm bars over optimiser steps and over done / total callbacks
    inspect_commands   models, presets, inspect FILE
    run_options        a run's flags and the SearchConfig they give (--preset, --set, named flags)
    run_commands       search (one ticket, --keep-ratios, --boosted), train, finetune
    run_results        what a finished run writes and prints: test metrics, log.json, trained weights
    zoo_commands       zoo build, zoo list
    eval_commands      the eval group: accuracy, curve, transfer, r2s, autoattack
    eval_accuracy      eval accuracy (offline by default, a row per ticket as it finishes)
    eval_curve         eval curve (accuracy against keep ratio)
    eval_transfer      eval transfer (the K x K transfer matrix)
    eval_r2s           eval r2s (R2S under the paper's protocol and adaptive attacks)
    eval_r2s_compare   eval r2s --protocols all (the like-with-like table)
    eval_autoattack    eval autoattack
    eval_images        which test images an evaluation runs on (the shipped subset, else the test split)
    eval_setup         the report commands' common options, default radius and setup
    eval_output        the report commands' common payload and closing lines
"""
from .commands import build_parser, inspect_summary, main, zoo_plan

__all__ = ["build_parser", "inspect_summary", "main", "zoo_plan"]

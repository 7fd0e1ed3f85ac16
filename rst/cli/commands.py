"""Command line: ``python -m rst <command>``. The only place in ``rst`` that parses arguments.

    python -m rst search --preset fmnist --keep-ratio 0.1 --out runs/fmnist-k0.1
    python -m rst train --preset fmnist --out runs/fmnist-dense          # dense AT baseline
    python -m rst finetune runs/fmnist-k0.1/ticket.rst.safetensors --mode inherit --out runs/ft
    python -m rst eval accuracy runs/fmnist-k0.1/ticket.rst.safetensors --attack pgd --steps 20

This module is the entry point: :func:`build_parser` puts the command groups' parsers together
(``inspect_commands``, ``run_commands``, ``eval_commands``, ``zoo_commands``) and :func:`main` runs one
command, its output folder checked and locked, every refusal one line and exit code 2.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import warnings
from pathlib import Path

from .eval_commands import add_eval_commands
from .input import OneLineParser, UsageError
from .inspect_commands import add_inspect_commands, inspect_summary  # noqa: F401 (re-exported)
from .run_commands import add_run_commands
from .run_results import write_json as _write_json  # noqa: F401 (re-exported)
from .zoo_commands import add_zoo_commands, zoo_plan  # noqa: F401 (re-exported)


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m rst`` parser: models, presets, inspect, search, train, finetune, eval ..., zoo ..."""
    p = OneLineParser(prog="python -m rst", description="RST Explorer: robust scratch tickets and R2S")
    sub = p.add_subparsers(dest="command", required=True)
    add_inspect_commands(sub)     # models | presets | inspect
    add_run_commands(sub)         # search | train | finetune
    ev = sub.add_parser("eval", help="evaluate tickets").add_subparsers(dest="eval_command", required=True)
    add_eval_commands(ev)         # accuracy | curve | transfer | r2s | autoattack
    add_zoo_commands(sub)         # zoo build | zoo list
    return p


# commands whose --out folder is a run's (checkpoints, files, log.json): checked and locked first
_RUN_COMMANDS = ("search", "train", "finetune")


@contextlib.contextmanager
def _output_folder(args):
    """An unwritable ``--out`` is refused before the run starts; one writer per folder (rank 0 takes the lock).
    A folder made here and left empty (a refused configuration, missing data) is removed again."""
    if getattr(args, "command", None) not in _RUN_COMMANDS or not getattr(args, "out", None):
        yield
        return
    from rst.runtime.atomic import ensure_writable_dir
    from rst.runtime.runlock import run_lock
    made = not Path(args.out).exists()
    folder = ensure_writable_dir(args.out)
    try:
        if int(os.environ.get("RANK", "0")) != 0:   # torchrun: the other ranks write nothing there
            yield
            return
        with run_lock(folder):
            yield
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _one_line(e) -> str:
    """An exception's message on one line (its type's name when it has none)."""
    return " ".join(str(e).split()) or type(e).__name__


def _warning_printer(original):
    """``warnings.showwarning`` that prints a MaskFileWarning as one ``warning: ...`` line on stderr."""
    from rst.network.masks import MaskFileWarning
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MaskFileWarning):
            if str(message) not in shown:          # once per command, however often the file is read
                shown.add(str(message))
                print(f"warning: {_one_line(message)}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)
    return show


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (rst.cli.input), a bad mask file, missing data (offline), a full disk, an
    unwritable or locked output folder: one line ``error: ...`` on stderr and exit code 2 (every command,
    ``eval ...`` included)."""
    from rst.runtime.allocator import keep_freed_memory
    from rst.runtime.atomic import OutputError, is_no_space
    from rst.runtime.checkpoint import ResumeMismatchError
    from rst.data.datasets import DataUnavailableError
    from rst.runtime.device import deterministic
    from rst.network.masks import MaskFileError, MaskFileWarning
    from rst.runtime.runlock import RunLockError
    args = build_parser().parse_args(argv)
    keep_freed_memory()                  # a process setting: the command line's, never the library's
    with warnings.catch_warnings():
        warnings.simplefilter("always", MaskFileWarning)
        warnings.showwarning = _warning_printer(warnings.showwarning)
        try:
            with _output_folder(args), deterministic(getattr(args, "deterministic", False)):
                return args.func(args)   # search / train / finetune --deterministic
        except (UsageError, MaskFileError, OutputError, RunLockError, ResumeMismatchError, DataUnavailableError) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as e:   # a full disk, also when torch.save wraps the failed write
            if not is_no_space(e):
                raise
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            print(f"error: no space left on device{where}: {_one_line(e)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())

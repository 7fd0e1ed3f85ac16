"""Command line: ``python -m rst <command>``. The only place in ``rst`` that parses arguments."""
from __future__ import annotations

import argparse
import json
import sys


def _cmd_models(args) -> int:
    from .models import list_models, model_entry
    for name in list_models():
        print(f"{name:18s} {model_entry(name).description}")
    return 0


def _cmd_inspect(args) -> int:
    from .masks import read_metadata
    print(json.dumps(read_metadata(args.file), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m rst", description="RST Explorer: robust scratch tickets and R2S")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("models", help="list the registered architectures")
    s.set_defaults(func=_cmd_models)
    s = sub.add_parser("inspect", help="print a mask file's metadata")
    s.add_argument("file")
    s.set_defaults(func=_cmd_inspect)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

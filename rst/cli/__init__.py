"""Layer 7, the command line: ``python -m rst`` (``commands``), the evaluation commands
(``eval_commands``) and the one-line refusal of bad input (``input``)."""
from .commands import build_parser, inspect_summary, main, zoo_plan

__all__ = ["build_parser", "inspect_summary", "main", "zoo_plan"]

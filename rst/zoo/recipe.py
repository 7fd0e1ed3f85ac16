"""Was recorded work made with this recipe? The check for a shipped or resumed ticket, for the dense
baseline, and the stamp that tells current reports from stale ones."""
from __future__ import annotations

import json
from pathlib import Path

from rst.network.masks import ticket_digest
from rst.network.tickets import CandidateSet
from rst.runtime.checkpoint import SPEED_FIELDS, config_differences
from rst.search.loop import SearchConfig


def _same_recipe(recorded: dict, cfg: SearchConfig) -> bool:
    """Was a ticket with this recorded ``search_config`` searched with ``cfg``? Fields added to
    SearchConfig after the ticket was written count at their defaults; speed settings
    (``rst.runtime.checkpoint.SPEED_FIELDS``: numerics, not the recipe) may differ."""
    try:
        return not config_differences(SearchConfig.from_dict(SearchConfig.recipe(recorded)).to_dict(), cfg.to_dict())
    except (TypeError, ValueError):
        return False


def _report_stamp(cs: CandidateSet, cfg: SearchConfig) -> str:
    """What a zoo's reports were computed from: each ticket's name, keep ratio and mask digest, and
    the recipe (the dense baseline's too; speed settings left out). Another stamp: the reports are stale."""
    # fields added to SearchConfig later are left out at their defaults, so older reports stay current
    recipe = {k: v for k, v in SearchConfig.without_later_defaults(cfg.to_dict()).items()
              if k not in SPEED_FIELDS + ("keep_ratio",)}
    return "\n".join([f"{t.name}:{t.keep_ratio:g}:{ticket_digest(t)}" for t in cs.tickets]
                     + [json.dumps(recipe, sort_keys=True)])


def _dense_is_stale(path: Path, cfg: SearchConfig) -> bool:
    """Was the dense baseline at ``path`` trained with another recipe than ``cfg`` (e.g. a zoo rebuilt
    with new settings over the shipped one)?"""
    from rst.network.masks import load_weights
    recorded = load_weights(path)[1].get("config") or {}
    return not _same_recipe(recorded, cfg.replace(keep_ratio=recorded.get("keep_ratio", cfg.keep_ratio)))

"""The zoo index, ``pretrained_masks/index.json``: what the CLI and the app list, one entry a zoo."""
from __future__ import annotations

import json
from pathlib import Path

from rst.runtime.atomic import atomic_write

INDEX_FORMAT = "rst-zoo-index"


def update_index(root: str | Path, entry: dict, first: bool = False) -> Path:
    """Replace ``entry`` (by id) in ``root/index.json`` where it stands, or append it; ``first=True``
    moves it to the front (the app opens on the first zoo)."""
    path = Path(root) / "index.json"
    index = {"format": INDEX_FORMAT, "version": 1, "zoos": []}
    if path.exists():
        index = json.loads(path.read_text())
    zoos = index.get("zoos", [])
    ids = [z.get("id") for z in zoos]
    if entry["id"] in ids:                      # in place: the first zoo is the app's default
        zoos[ids.index(entry["id"])] = entry
    else:
        zoos.append(entry)
    if first:
        zoos = [entry] + [z for z in zoos if z.get("id") != entry["id"]]
    index["zoos"] = zoos
    return atomic_write(path, json.dumps(index, indent=2, default=str))   # readers never see half an index


def read_index(root: str | Path = "pretrained_masks") -> dict:
    """The zoo index (an empty one when the file is missing)."""
    path = Path(root) / "index.json"
    if not path.exists():
        return {"format": INDEX_FORMAT, "version": 1, "zoos": []}
    index = json.loads(path.read_text())
    if index.get("format") != INDEX_FORMAT:
        raise ValueError(f"{path} is not a zoo index (format {index.get('format')!r})")
    return index

"""What the frozen config dataclasses (``NetworkSpec``, ``AttackConfig``) share: a strict ``from_dict``."""
from __future__ import annotations

import dataclasses


def strict_from_dict(cls, d: dict, what: str):
    """``cls(**d)``, refusing keys that are not fields of ``cls`` with a message naming them."""
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise ValueError(f"unknown {what} fields: {sorted(unknown)}")
    return cls(**d)

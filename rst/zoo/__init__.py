"""Layer 6, the zoo: building and evaluating a set of tickets with its dense baseline and reports
(``build``), its index, and the study of one recipe across several random networks (``across_networks``)."""
from .build import (AUTOATTACK_CHUNK, DEFAULT_KEEP_RATIOS, INDEX_FORMAT, ZooPlan, build_zoo, evaluate_zoo, read_index,
                    update_index)

__all__ = ["AUTOATTACK_CHUNK", "DEFAULT_KEEP_RATIOS", "INDEX_FORMAT", "ZooPlan", "build_zoo", "evaluate_zoo",
           "read_index", "update_index"]

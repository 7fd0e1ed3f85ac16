"""Layer 3, the network and its masks: masked layers, the seeded random networks, their weights, and
the mask file format (``masks`` owns it; ``mask_checks`` is its guard against hostile files)."""

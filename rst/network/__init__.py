"""Layer 3, the network and its masks: masked layers, the seeded random networks, their weights, the
tickets in memory (``tickets``), and the mask file format (``masks`` owns it, on top of ``bit_packing``
and ``dense_export``; ``mask_checks`` is its guard against hostile files, reading paths through
``regular_files`` and refusing with the errors of ``mask_errors``); ``folded`` makes the fast,
BN-folded copy of a ticket that attacks are generated on, its dead channels cut out by ``compact``."""

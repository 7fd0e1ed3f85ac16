"""Layer 4, attacks and evaluation: attacks in [0, 1] pixel space (``attacks``, ``ensemble_attacks``,
``autoattack``), per-image results and their errors (``per_image``), accuracy, sparsity curves and the
transfer matrix (``metrics``), the R2S switch (``r2s``, ``switch_probabilities``), its sanity checks,
the like-with-like comparison (``compare``) and report files (``reports``)."""

"""Layer 1, running things: atomic files and locks, progress, provenance, devices and precision,
CPU workers and the allocator, checkpoints, and the strict frozen-config checks. No other rst import."""

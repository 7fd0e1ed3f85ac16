"""What the eval report commands share on the way out: the report's common JSON fields and the lines
that end the command (the files written, the failed sanity checks)."""
from __future__ import annotations


def base_payload(args, cs, x, device, attack) -> dict:
    """The report fields every eval command writes: command, file, network, tickets, data, attack, seed, device."""
    return {"command": f"eval {getattr(args, 'eval_command', '?')}", "file": str(args.file), "network": cs.spec.to_dict(),
            "weight_checksum": cs.weight_checksum,
            "tickets": [{"index": i, "name": t.name, "keep_ratio": t.keep_ratio} for i, t in enumerate(cs.tickets)],
            "data": {"dataset": cs.spec.dataset, "split": f"test[:{len(x)}]"}, "n_images": len(x),
            "attack": attack.to_dict(), "attack_description": attack.describe(), "seed": args.seed,
            "device": str(device)}


def print_written(paths: dict) -> None:
    """``written: a.json, a.csv, a.png``."""
    print("written: " + ", ".join(str(p) for p in paths.values()))


def print_checks(checks) -> int:
    """Print each failed sanity check (or that all passed); return how many failed."""
    failed = [c for c in checks if not c.passed]
    for c in failed:
        print(f"SANITY CHECK FAILED  {c.name}: {c.detail}")
    if checks and not failed:
        print(f"sanity checks: all {len(checks)} passed")
    return len(failed)

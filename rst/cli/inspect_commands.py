"""The commands that only read and list: ``models``, ``presets`` and ``inspect FILE`` (a mask file's
summary, :func:`inspect_summary`); their parsers are :func:`add_inspect_commands`'s."""
from __future__ import annotations

import json
import sys


def add_inspect_commands(sub) -> None:
    """Register ``models``, ``presets`` and ``inspect`` on the top-level subparser group."""
    sub.add_parser("models", help="list the registered architectures").set_defaults(func=_cmd_models)
    sub.add_parser("presets", help="list the search presets").set_defaults(func=_cmd_presets)
    s = sub.add_parser("inspect", help="summarise a mask file (network, tickets, metrics, checksum)")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print the full metadata record as JSON")
    s.set_defaults(func=_cmd_inspect)


def _cmd_models(args) -> int:
    """``models``: each registered architecture and its description."""
    from rst.network.models import list_models, model_entry
    for name in list_models():
        print(f"{name:18s} {model_entry(name).description}")
    return 0


def _cmd_presets(args) -> int:
    """``presets``: each search preset's network, data set, epochs, inner attack and keep ratio."""
    from rst.search.loop import PRESETS
    for name, cfg in PRESETS.items():
        width = f" (width {cfg.width:g})" if cfg.width != 1 else ""
        print(f"{name:24s} {cfg.arch}{width} on {cfg.dataset}, {cfg.epochs} epochs, inner {cfg.describe_inner_attack()}, "
              f"keep_ratio={cfg.keep_ratio}")
    return 0


def _cmd_inspect(args) -> int:
    """A short summary of a mask file (``--json``: its full metadata record)."""
    from rst.network.masks import MaskFileError, load_tickets, read_metadata
    try:
        meta = read_metadata(args.file)
    except MaskFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    try:                       # loading regenerates the weights and compares their SHA-256 with the file's
        load_tickets(args.file)
        check = "verified (the regenerated weights match the file's SHA-256)"
    except MaskFileError as e:
        check = f"FAILED: {e}"
    print("\n".join(inspect_summary(meta, str(args.file), check)))
    return 0 if check.startswith("verified") else 2      # a refused file: exit 2, as every refusal


def _headline(metrics: dict) -> str:
    """``clean 73.8 % · PGD-20 53.2 % (test[:2000])``: the test split's clean and robust numbers, else the
    validation ones."""
    def pick(kind):
        names = [n for n in metrics if isinstance(metrics[n], dict) and "value" in metrics[n]
                 and (("clean" in n) if kind == "clean" else any(w in n for w in ("pgd", "robust", "autoattack")))]
        names.sort(key=lambda n: (not str(metrics[n].get("split", "")).startswith("test"), "autoattack" in n, n))
        return names[0] if names else None
    parts = []
    for kind in ("clean", "robust"):
        n = pick(kind)
        if n:
            m = metrics[n]
            what = "clean" if kind == "clean" else (m.get("attack", "").split(" ")[0] or n)
            parts.append(f"{what} {100 * m['value']:.1f} % ({m.get('split', '?')})")
    return " · ".join(parts) or "no metrics recorded"


def inspect_summary(meta: dict, path: str, checksum: str) -> list[str]:
    """The lines ``python -m rst inspect FILE`` prints: network, data set, seed, tickets, checksum status."""
    net = meta.get("network", {})
    tickets = meta.get("tickets", [])
    prov = meta.get("provenance") or {}
    lines = [f"{path}: {len(tickets)} ticket(s), format {meta.get('format')} v{meta.get('format_version')}",
             f"  network   {net.get('arch')} ×{net.get('width', 1):g}, {net.get('granularity', 'element')}-wise masks, "
             f"init {net.get('init')}",
             f"  data set  {net.get('dataset')}",
             f"  seed      {net.get('seed')} (the weights are regenerated from it)",
             f"  checksum  {str(meta.get('weight_checksum', ''))[:16]}… {checksum}"]
    if prov:
        lines.append(f"  written   {prov.get('created', '?')} · git {str(prov.get('git_revision') or '?')[:12]}")
    lines.append("  tickets:")
    width = max([len(str(t.get("name", ""))) for t in tickets] + [6])
    for i, t in enumerate(tickets):
        kept = t.get("kept_fraction")
        kept_s = f"kept {100 * kept:5.2f} %" if isinstance(kept, (int, float)) else ""
        lines.append(f"    {i:>2} {str(t.get('name') or '-'):{width}}  keep ratio {t.get('keep_ratio'):<5g} {kept_s}  "
                     f"{_headline(t.get('metrics') or {})}")
    lines.append("  (--json: the full metadata record)")
    return lines

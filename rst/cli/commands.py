"""Command line: ``python -m rst <command>``. The only place in ``rst`` that parses arguments.

    python -m rst search --preset fmnist --keep-ratio 0.1 --out runs/fmnist-k0.1
    python -m rst train --preset fmnist --out runs/fmnist-dense          # dense AT baseline
    python -m rst finetune runs/fmnist-k0.1/ticket.rst.safetensors --mode inherit --out runs/ft
    python -m rst eval accuracy runs/fmnist-k0.1/ticket.rst.safetensors --attack pgd --steps 20
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import json
import os
import sys
import warnings
from pathlib import Path

from .input import OneLineParser, UsageError, count, r2s_protocols


# --------------------------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------------------------


def _parse_overrides(pairs: list[str]) -> dict:
    """``["epochs=5", "eps=0.1", "lr_milestones=(0.5,)"]`` → dict with Python literals."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--set expects key=value, got {pair!r}")
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass                                   # a string: inner_attack=pgd
        out[key.strip()] = tuple(value) if isinstance(value, list) else value   # lr_milestones=[0.5]
    return out


def _overrides(args) -> dict:
    """SearchConfig fields given on the command line: ``--set k=v`` and the named flags."""
    overrides = _parse_overrides(args.set)
    for name in ("keep_ratio", "epochs", "seed", "train_subset", "batch_size"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides


def _config_from_args(args, base=None):
    """``--preset`` with the command line's overrides (or ``base`` with them when no preset is named)."""
    from rst.search.loop import preset
    with _bad_configuration():
        if args.preset or base is None:
            return preset(args.preset or "fmnist", **_overrides(args))
        return base.replace(**_overrides(args))


@contextlib.contextmanager
def _bad_configuration():
    """A preset, override or keep ratio the configuration refuses → :class:`UsageError` (one line, exit 2)."""
    try:
        yield
    except (KeyError, TypeError, ValueError) as e:      # KeyError: an unknown preset (its str() is quoted)
        raise UsageError(f"bad configuration: {e.args[0] if e.args else e}") from None


class _Progress:
    """tqdm bar over optimiser steps, with the epoch's validation numbers in the postfix."""

    def __init__(self, label: str, quiet: bool = False):
        self.label, self.quiet, self.bar = label, quiet, None

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        from tqdm.auto import tqdm
        if event["event"] == "step":
            if self.bar is None:
                self.bar = tqdm(total=event["steps"] * event["epochs"], desc=self.label, unit="step",
                                dynamic_ncols=True)
            self.bar.n = event["epoch"] * event["steps"] + event["step"]
            if "loss" in event:                   # reported every few steps (each report is a device sync)
                self.bar.set_postfix(epoch=event["epoch"] + 1, loss=f"{event['loss']:.3f}", refresh=False)
            self.bar.refresh()
        elif event["event"] == "epoch" and self.bar is not None:
            msg = f"epoch {event['epoch'] + 1}/{event['epochs']}: adv loss {event['train_adv_loss']:.3f}"
            if "val_robust" in event:
                msg += f", val clean {event['val_clean']:.3f}, val robust {event['val_robust']:.3f}"
            self.bar.write(msg)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _write_json(path: Path, obj) -> None:
    from rst.runtime.atomic import atomic_write
    atomic_write(path, json.dumps(obj, indent=2, default=str))


def _test_metrics(model, cfg, args) -> dict:
    """Clean and PGD-20 accuracy on the test set (or its first ``--test-images``; 0 skips)."""
    from rst.data.datasets import test_split
    from rst.evaluation.metrics import test_metrics
    if args.test_images == 0:
        return {}
    x, y = test_split(cfg.dataset, cfg.seed, args.data_dir, args.test_images)
    return test_metrics(model, x, y, cfg.eps)


# --------------------------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------------------------


def _cmd_models(args) -> int:
    from rst.network.models import list_models, model_entry
    for name in list_models():
        print(f"{name:18s} {model_entry(name).description}")
    return 0


def _cmd_presets(args) -> int:
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


def _cmd_search(args) -> int:
    from rst.runtime.device import resolve_device
    from rst.network.masks import CandidateSet, save_tickets
    from rst.search.loop import run_search
    from rst.search.distributed import init_distributed, is_main
    cfg = _config_from_args(args)
    if args.keep_ratios:
        return _search_batched(cfg, args)
    if args.boosted:
        return _search_boosted(cfg, args)
    device = init_distributed(resolve_device(args.device)).device   # under torchrun: this rank's device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = _Progress(f"search keep_ratio={cfg.keep_ratio:g}", args.quiet or not is_main())
    try:
        result = run_search(cfg, device=device, data_dir=args.data_dir, workdir=out, resume=args.resume,
                            progress=bar, allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same ticket; rank 0 evaluates and writes it
        return 0
    model = CandidateSet(result.spec, [result.ticket]).model(0, device=device)
    result.ticket.metrics.update(_test_metrics(model, cfg, args))
    path = save_tickets(out / "ticket.rst.safetensors", CandidateSet(result.spec, [result.ticket]))
    _write_json(out / "log.json", {"command": "search", "config": cfg.to_dict(), "network": result.spec.to_dict(),
                                   "best_epoch": result.best_epoch, "metrics": result.ticket.metrics,
                                   "history": result.history, "provenance": result.provenance})
    print(f"ticket written to {path}")
    for k, v in result.ticket.metrics.items():
        print(f"  {k:12s} {v['value']:.4f}   ({v['split']}, {v['attack']})")
    return 0


def _search_boosted(cfg, args) -> int:
    """``search --boosted K``: K tickets searched one after another against the current switch (rst.search.boosted)."""
    from rst.search.boosted import boosted_search
    from rst.runtime.device import resolve_device
    bar = _Progress(f"boosted search of {args.boosted} tickets", args.quiet)
    try:
        res = boosted_search(cfg, args.boosted, args.out, device=resolve_device(args.device),
                             data_dir=args.data_dir, progress=bar)
    finally:
        bar.close()
    print(f"candidate set written to {res.path} ({res.seconds:.0f} s), switch probabilities "
          f"{[round(a, 3) for a in res.candidate_set.probabilities]}")
    return 0


def _search_batched(cfg, args) -> int:
    """``search --keep-ratios a,b,c``: one ticket per ratio from one network, in one batched pass."""
    from rst.search.batched import search_tickets
    from rst.runtime.device import resolve_device
    from rst.network.masks import CandidateSet, save_tickets
    ratios = _ratios(args.keep_ratios)
    device = resolve_device(args.device)
    if len(ratios) > 1 and not args.quiet:
        _note_batched_on_cpu(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = _Progress(f"search {len(ratios)} tickets in one pass", args.quiet)
    try:
        results = search_tickets(cfg, ratios, device=device, data_dir=args.data_dir, workdir=out,
                                 resume=args.resume, progress=bar, allow_changes=tuple(args.allow_changes))
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        bar.close()
    cs = CandidateSet(results[0].spec, [r.ticket for r in results])
    for i, r in enumerate(results):
        r.ticket.metrics.update(_test_metrics(cs.model(i, device=device), cfg, args))
    path = save_tickets(out / "tickets.rst.safetensors", cs)
    _write_json(out / "log.json", {"command": "search", "batched": True, "config": cfg.to_dict(),
                                   "network": cs.spec.to_dict(), "provenance": results[0].provenance,
                                   "tickets": [{"keep_ratio": r.config.keep_ratio, "best_epoch": r.best_epoch,
                                                "metrics": r.ticket.metrics, "history": r.history}
                                               for r in results]})
    print(f"{len(results)} tickets written to {path}")
    for r in results:
        for k, v in r.ticket.metrics.items():
            print(f"  {r.ticket.name:10s} {k:12s} {v['value']:.4f}   ({v['split']}, {v['attack']})")
    return 0


def _note_batched_on_cpu(device) -> None:
    if device.type == "cpu":
        print("note: on a CPU one batched pass measured slower than one search per ticket (0.79x, README "
              "'Several tickets in one pass'); it is meant for GPUs", file=sys.stderr)


def _ratios(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(r) for r in text.split(","))
    except ValueError:
        raise UsageError(f"--keep-ratios expects comma-separated numbers, got {text!r}") from None


def _save_trained(result, cfg, args, kind: str, extra: dict) -> int:
    from rst.network.masks import save_weights
    from rst.search.loop import validation_metrics
    from rst.runtime.provenance import provenance
    out = Path(args.out)
    metrics = _test_metrics(result.model, cfg, args)
    best = next((h for h in result.history if h["epoch"] == result.best_epoch), {})
    metrics.update(validation_metrics(best, cfg))
    path = save_weights(out / f"{kind}.weights.safetensors", result.model, cfg.network_spec(),
                        {"kind": kind, "metrics": metrics, "config": cfg.to_dict(), **extra})
    _write_json(out / "log.json", {"command": kind, "config": cfg.to_dict(), "metrics": metrics,
                                   "best_epoch": result.best_epoch, "history": result.history,
                                   "provenance": provenance(), **extra})
    print(f"weights written to {path}")
    for k, v in metrics.items():
        print(f"  {k:12s} {v['value']:.4f}   ({v['split']}, {v['attack']})")
    return 0


def _rank_device(args):
    """This process's device, resolved BEFORE any model is built: under torchrun ``cuda:LOCAL_RANK``
    (made the current device, so no rank opens a context on GPU 0), else ``--device`` as given."""
    from rst.runtime.device import resolve_device
    from rst.search.distributed import init_distributed
    return init_distributed(resolve_device(args.device)).device


def _cmd_train(args) -> int:
    from rst.search.distributed import is_main
    from rst.search.train import train_dense
    cfg = _config_from_args(args)
    device = _rank_device(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bar = _Progress("dense adversarial training", args.quiet or not is_main())
    try:
        result = train_dense(cfg, device=device, data_dir=args.data_dir, workdir=args.out,
                             resume=args.resume, progress=bar,
                             allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same weights; rank 0 evaluates and writes them
        return 0
    return _save_trained(result, cfg, args, "dense_at", {})


def _cmd_finetune(args) -> int:
    from rst.search.distributed import is_main
    from rst.network.masks import load_tickets
    from rst.search.loop import SearchConfig
    from rst.search.train import finetune
    cs = load_tickets(args.ticket)
    ticket = cs.tickets[args.index]
    # the ticket's own search recipe, unless --preset names another
    recorded = SearchConfig.recipe(ticket.search_config)
    cfg = _config_from_args(args, SearchConfig.from_dict(recorded) if recorded else None)
    device = _rank_device(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bar = _Progress(f"fine-tune ({args.mode})", args.quiet or not is_main())
    try:
        result = finetune(cs, args.index, args.mode, cfg, device=device, data_dir=args.data_dir,
                          workdir=args.out, resume=args.resume, progress=bar,
                             allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same weights; rank 0 evaluates and writes them
        return 0
    return _save_trained(result, cfg, args, f"ft_{args.mode}", {"source_ticket": ticket.name})


def zoo_plan(args):
    """The :class:`rst.zoo.build.ZooPlan` of parsed ``zoo build`` arguments (its ``command()`` parses back to it)."""
    from rst.zoo.build import DEFAULT_KEEP_RATIOS, ZooPlan
    ratios = _ratios(args.keep_ratios) if args.keep_ratios else DEFAULT_KEEP_RATIOS
    with _bad_configuration():
        return ZooPlan(args.preset, ratios, zoo_id=args.id, overrides=tuple(_parse_overrides(args.set).items()),
                       eval_images=args.eval_images, transfer_images=args.transfer_images,
                       r2s_images=args.r2s_images, autoattack_images=args.autoattack_images,
                       r2s_protocols=tuple(args.r2s_protocols.split(",")) if args.r2s_protocols else ZooPlan.r2s_protocols,
                       autoattack_tickets=args.autoattack_tickets, subset_images=args.subset_images)


def _cmd_zoo_build(args) -> int:
    from rst.runtime.atomic import ensure_writable_dir
    from rst.runtime.device import resolve_device
    from rst.runtime.runlock import run_lock
    plan = zoo_plan(args)
    if args.batched:
        _note_batched_on_cpu(resolve_device(args.device))
    work = ensure_writable_dir(Path(args.work) / plan.id)     # one build per --work folder of a zoo
    with run_lock(work):
        entry = _build_zoo_with_progress(plan, args)
    print(f"{len(entry['tickets'])} tickets in {args.root}/{entry['candidate_set']}")
    return 0


def _build_zoo_with_progress(plan, args) -> dict:
    from rst.runtime.device import resolve_device
    from rst.zoo.build import build_zoo
    bar = _Progress(f"zoo {plan.id}", args.quiet)
    try:
        return build_zoo(plan, root=args.root, work=args.work, device=resolve_device(args.device),
                         data_dir=args.data_dir, progress=print, step_progress=bar, evaluate=not args.no_eval,
                         dense=not args.no_dense, subset_path=args.subset, batched=args.batched, jobs=args.jobs,
                         app_default=args.app_default)
    finally:
        bar.close()


def _cmd_zoo_list(args) -> int:
    from rst.zoo.build import read_index
    for z in read_index(args.root)["zoos"]:
        print(f"{z['id']}: {z['title']}  ({len(z['tickets'])} tickets; built with: {z['built_with']})")
        for t in z["tickets"]:
            m = t["metrics"]
            print(f"   {t['name']:10s} clean {m.get('test_clean', {}).get('value', float('nan')):.4f}"
                  f"  PGD-20 {m.get('test_pgd20', {}).get('value', float('nan')):.4f}")
    return 0


# --------------------------------------------------------------------------------------------
# parser
# --------------------------------------------------------------------------------------------


def _add_run_args(s, preset_default: str | None = "fmnist"):
    s.add_argument("--preset", default=preset_default, help="named recipe (python -m rst presets)")
    s.add_argument("--keep-ratio", dest="keep_ratio", type=float, help="fraction of weights kept per layer")
    s.add_argument("--epochs", type=int)
    s.add_argument("--seed", type=int, help="seed of the random network, split, shuffling and attacks")
    s.add_argument("--batch-size", dest="batch_size", type=int)
    s.add_argument("--train-subset", dest="train_subset", type=int, help="use only N training images")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any SearchConfig field")
    s.add_argument("--out", required=True, help="output folder (checkpoint, files, log.json)")
    s.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt (refused if its recipe differs)")
    s.add_argument("--allow-change", dest="allow_changes", action="append", default=[], metavar="FIELD",
                   help="with --resume: accept a checkpoint whose recorded FIELD differs (e.g. epochs); repeatable")
    s.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu, cuda, cuda:1, ...")
    s.add_argument("--data-dir", dest="data_dir", help="data folder (else $RST_DATA_DIR, then defaults)")
    s.add_argument("--test-images", dest="test_images", type=int, default=None,
                   help="evaluate on the first N test images afterwards (0: skip; default: all)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--deterministic", action="store_true",
                   help="PyTorch's deterministic algorithms (rst.runtime.device.deterministic): reproducible CUDA runs, "
                        "slower; refuses ops without a deterministic CUDA kernel (Conv-4's pooling backward)")


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="python -m rst", description="RST Explorer: robust scratch tickets and R2S")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("models", help="list the registered architectures").set_defaults(func=_cmd_models)
    sub.add_parser("presets", help="list the search presets").set_defaults(func=_cmd_presets)
    s = sub.add_parser("inspect", help="summarise a mask file (network, tickets, metrics, checksum)")
    s.add_argument("file")
    s.add_argument("--json", action="store_true", help="print the full metadata record as JSON")
    s.set_defaults(func=_cmd_inspect)

    s = sub.add_parser("search", help="search one robust scratch ticket (or several in one pass)")
    _add_run_args(s)
    s.add_argument("--keep-ratios", dest="keep_ratios",
                   help="comma-separated: one ticket per ratio from the same network, searched together in "
                        "one batched pass (rst.search.batched); writes OUT/tickets.rst.safetensors")
    s.add_argument("--boosted", type=count, default=0, metavar="K",
                   help="search K tickets one after another, each against the current random switch "
                        "(rst.search.boosted; --set boost_wrong_class=, boost_warm_start=); resumes by itself; "
                        "writes OUT/setK.rst.safetensors with the switch probabilities")
    s.set_defaults(func=_cmd_search)
    s = sub.add_parser("train", help="dense adversarial training baseline (all weights trained)")
    _add_run_args(s)
    s.set_defaults(func=_cmd_train)
    s = sub.add_parser("finetune", help="adversarially train a ticket's weights under its frozen mask")
    s.add_argument("ticket", help="mask file")
    s.add_argument("--index", type=int, default=0, help="ticket index in the file")
    s.add_argument("--mode", choices=("inherit", "reinit"), default="inherit")
    _add_run_args(s, preset_default=None)
    s.set_defaults(func=_cmd_finetune)

    ev = sub.add_parser("eval", help="evaluate tickets").add_subparsers(dest="eval_command", required=True)
    from .eval_commands import add_eval_commands
    add_eval_commands(ev)   # accuracy | curve | transfer | r2s | autoattack

    zoo = sub.add_parser("zoo", help="build and list ticket zoos").add_subparsers(dest="zoo_command", required=True)
    s = zoo.add_parser("build", help="search a candidate set, its dense baseline and reports (resumable)")
    s.add_argument("preset")
    s.add_argument("--keep-ratios", dest="keep_ratios", help="comma-separated (default 0.02,...,0.7)")
    s.add_argument("--id", help="zoo id (default: the preset name)")
    s.add_argument("--set", action="append", metavar="KEY=VALUE", help="override any SearchConfig field")
    s.add_argument("--root", default="pretrained_masks")
    s.add_argument("--work", default="runs/zoo", help="checkpoints (not shipped)")
    s.add_argument("--subset", help="also write the first test images here (the app's shipped subset)")
    s.add_argument("--subset-images", dest="subset_images", type=int, default=1000,
                   help="how many test images --subset writes")
    s.add_argument("--eval-images", dest="eval_images", type=int, default=None)
    s.add_argument("--transfer-images", dest="transfer_images", type=int, default=1000)
    s.add_argument("--r2s-images", dest="r2s_images", type=int, default=500)
    s.add_argument("--autoattack-images", dest="autoattack_images", type=int, default=200,
                   help="test images for AutoAttack per ticket (0: skip that report)")
    s.add_argument("--r2s-protocols", dest="r2s_protocols", type=r2s_protocols, default=None,
                   help="comma-separated R2S protocols of the r2s report (default: paper,expectation,ensemble,eot)")
    s.add_argument("--autoattack-tickets", dest="autoattack_tickets", type=count, default=None, metavar="N",
                   help="AutoAttack only the N tickets best under PGD-20, and the dense baseline (default: all)")
    s.add_argument("--jobs", type=count, default=1, metavar="N",
                   help="worker processes for the searches and reports, the threads split between them "
                        "(on a 2-core CPU, --jobs 2 beats one 2-thread process)")
    s.add_argument("--no-eval", dest="no_eval", action="store_true", help="skip the reports")
    s.add_argument("--app-default", dest="app_default", action="store_true",
                   help="list this zoo first in the index: the app opens on it")
    s.add_argument("--no-dense", dest="no_dense", action="store_true", help="skip the dense baseline")
    s.add_argument("--batched", action="store_true",
                   help="search the missing tickets together in one batched pass (rst.search.batched; GPU)")
    s.add_argument("--device", default="auto")
    s.add_argument("--data-dir", dest="data_dir")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=_cmd_zoo_build)
    s = zoo.add_parser("list", help="list the zoos in pretrained_masks/index.json")
    s.add_argument("--root", default="pretrained_masks")
    s.set_defaults(func=_cmd_zoo_list)
    return p


# commands whose --out folder is a run's (checkpoints, files, log.json): checked and locked first
_RUN_COMMANDS = ("search", "train", "finetune")


@contextlib.contextmanager
def _output_folder(args):
    """An unwritable ``--out`` is refused before the run starts; one writer per folder (rank 0 takes the lock).
    A folder made here and left empty (a refused configuration, missing data) is removed again."""
    if getattr(args, "command", None) not in _RUN_COMMANDS or not getattr(args, "out", None):
        yield
        return
    from rst.runtime.atomic import ensure_writable_dir
    from rst.runtime.runlock import run_lock
    made = not Path(args.out).exists()
    folder = ensure_writable_dir(args.out)
    try:
        if int(os.environ.get("RANK", "0")) != 0:   # torchrun: the other ranks write nothing there
            yield
            return
        with run_lock(folder):
            yield
    finally:
        if made and folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


def _one_line(e) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _warning_printer(original):
    """``warnings.showwarning`` that prints a MaskFileWarning as one ``warning: ...`` line on stderr."""
    from rst.network.masks import MaskFileWarning
    shown = set()

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, MaskFileWarning):
            if str(message) not in shown:          # once per command, however often the file is read
                shown.add(str(message))
                print(f"warning: {_one_line(message)}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)
    return show


def main(argv: list[str] | None = None) -> int:
    """Run one command. Bad input (rst.cli.input), a bad mask file, missing data (offline), a full disk, an
    unwritable or locked output folder: one line ``error: ...`` on stderr and exit code 2 (every command,
    ``eval ...`` included)."""
    from rst.runtime.allocator import keep_freed_memory
    from rst.runtime.atomic import OutputError, is_no_space
    from rst.runtime.checkpoint import ResumeMismatchError
    from rst.data.datasets import DataUnavailableError
    from rst.runtime.device import deterministic
    from rst.network.masks import MaskFileError, MaskFileWarning
    from rst.runtime.runlock import RunLockError
    args = build_parser().parse_args(argv)
    keep_freed_memory()                  # a process setting: the command line's, never the library's
    with warnings.catch_warnings():
        warnings.simplefilter("always", MaskFileWarning)
        warnings.showwarning = _warning_printer(warnings.showwarning)
        try:
            with _output_folder(args), deterministic(getattr(args, "deterministic", False)):
                return args.func(args)   # search / train / finetune --deterministic
        except (UsageError, MaskFileError, OutputError, RunLockError, ResumeMismatchError, DataUnavailableError) as e:
            print(f"error: {_one_line(e)}", file=sys.stderr)
            return 2
        except (OSError, RuntimeError) as e:   # a full disk, also when torch.save wraps the failed write
            if not is_no_space(e):
                raise
            where = f" ({e.filename})" if getattr(e, "filename", None) else ""
            print(f"error: no space left on device{where}: {_one_line(e)}", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())

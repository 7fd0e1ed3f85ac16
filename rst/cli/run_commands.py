"""The commands that run a search or a training into ``--out``: ``search`` (one ticket, ``--keep-ratios``
in one batched pass, ``--boosted K``), ``train`` (the dense AT baseline) and ``finetune`` (a ticket's
weights under its frozen mask); their parsers are :func:`add_run_commands`'s."""
from __future__ import annotations

import sys
from pathlib import Path

from .input import UsageError, count, keep_ratio_list
from .progress_bars import StepBar
from .run_options import add_run_args, config_from_args
from .run_results import final_test_metrics, print_metrics, save_trained, write_json


def add_run_commands(sub) -> None:
    """Register ``search``, ``train`` and ``finetune`` on the top-level subparser group."""
    s = sub.add_parser("search", help="search one robust scratch ticket (or several in one pass)")
    add_run_args(s)
    s.add_argument("--keep-ratios", dest="keep_ratios",
                   help="comma-separated: one ticket per ratio from the same network, searched together in "
                        "one batched pass (rst.search.batched); writes OUT/tickets.rst.safetensors")
    s.add_argument("--boosted", type=count, default=0, metavar="K",
                   help="search K tickets one after another, each against the current random switch "
                        "(rst.search.boosted; --set boost_wrong_class=, boost_warm_start=, boost_inner=pgd|apgd); "
                        "resumes by itself; writes OUT/setK.rst.safetensors with the switch probabilities")
    s.add_argument("--boost-first", dest="boost_first", metavar="FILE:NAME",
                   help="with --boosted: member 0 is this ticket of a mask file, as it is (e.g. a zoo's "
                        "best ticket); the search goes on from member 1, fresh")
    s.set_defaults(func=_cmd_search)
    s = sub.add_parser("train", help="dense adversarial training baseline (all weights trained)")
    add_run_args(s)
    s.set_defaults(func=_cmd_train)
    s = sub.add_parser("finetune", help="adversarially train a ticket's weights under its frozen mask")
    s.add_argument("ticket", help="mask file")
    s.add_argument("--index", type=int, default=0, help="ticket index in the file")
    s.add_argument("--mode", choices=("inherit", "reinit"), default="inherit")
    add_run_args(s, preset_default=None)
    s.set_defaults(func=_cmd_finetune)


def _rank_device(args):
    """This process's device, resolved BEFORE any model is built: under torchrun ``cuda:LOCAL_RANK``
    (made the current device, so no rank opens a context on GPU 0), else ``--device`` as given."""
    from rst.runtime.device import resolve_device
    from rst.search.distributed import init_distributed
    return init_distributed(resolve_device(args.device)).device


def _cmd_search(args) -> int:
    """``search``: one ticket into ``OUT/ticket.rst.safetensors`` (``--keep-ratios``, ``--boosted``: several)."""
    from rst.network.masks import CandidateSet, save_tickets
    from rst.search.loop import run_search
    from rst.search.distributed import is_main
    cfg = config_from_args(args)
    if args.keep_ratios:
        return _search_batched(cfg, args)
    if args.boosted:
        return _search_boosted(cfg, args)
    device = _rank_device(args)   # under torchrun: this rank's device
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = StepBar(f"search keep_ratio={cfg.keep_ratio:g}", args.quiet or not is_main())
    try:
        result = run_search(cfg, device=device, data_dir=args.data_dir, workdir=out, resume=args.resume,
                            progress=bar, allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same ticket; rank 0 evaluates and writes it
        return 0
    model = CandidateSet(result.spec, [result.ticket]).model(0, device=device)
    result.ticket.metrics.update(final_test_metrics(model, cfg, args))
    path = save_tickets(out / "ticket.rst.safetensors", CandidateSet(result.spec, [result.ticket]))
    write_json(out / "log.json", {"command": "search", "config": cfg.to_dict(), "network": result.spec.to_dict(),
                                  "best_epoch": result.best_epoch, "metrics": result.ticket.metrics,
                                  "history": result.history, "provenance": result.provenance})
    print(f"ticket written to {path}")
    print_metrics(result.ticket.metrics)
    return 0


def _search_boosted(cfg, args) -> int:
    """``search --boosted K``: K tickets searched one after another against the current switch (rst.search.boosted)."""
    from rst.search.boosted import boosted_search
    from rst.runtime.device import resolve_device
    first = _first_member(args.boost_first) if args.boost_first else None
    bar = StepBar(f"boosted search of {args.boosted} tickets", args.quiet)
    try:
        res = boosted_search(cfg, args.boosted, args.out, device=resolve_device(args.device), first=first,
                             data_dir=args.data_dir, progress=bar)
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        bar.close()
    _add_test_metrics(res.candidate_set, cfg, args, res.path)
    print(f"candidate set written to {res.path} ({res.seconds:.0f} s), switch probabilities "
          f"{[round(a, 3) for a in res.candidate_set.probabilities]}")
    for t in res.candidate_set.tickets:
        print_metrics(t.metrics, prefix=f"{t.name}: ")
    return 0


def _add_test_metrics(cs, cfg, args, path) -> None:
    """Clean and PGD-20 test accuracy of the members that lack them (as a single search records them),
    written back into the set file; a rerun of a finished build only adds what is missing."""
    from rst.network.masks import save_tickets
    missing = [i for i, t in enumerate(cs.tickets) if "test_pgd20" not in t.metrics]
    if not missing or args.test_images == 0:
        return
    for i in missing:
        cs.tickets[i].metrics.update(final_test_metrics(cs.model(i), cfg, args))
    save_tickets(path, cs)


def _first_member(given: str):
    """``FILE:NAME`` → a one-ticket CandidateSet holding that ticket of the mask file."""
    from rst.network.masks import CandidateSet, load_tickets
    path, sep, name = given.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"--boost-first expects FILE:NAME, got {given!r}")
    cs = load_tickets(path)
    found = [t for t in cs.tickets if t.name == name]
    if not found:
        raise UsageError(f"--boost-first: no ticket {name!r} in {path} (it has {', '.join(t.name for t in cs.tickets)})")
    return CandidateSet(cs.spec, found, weight_checksum=cs.weight_checksum)


def _search_batched(cfg, args) -> int:
    """``search --keep-ratios a,b,c``: one ticket per ratio from one network, in one batched pass."""
    from rst.search.batched import search_tickets
    from rst.runtime.device import resolve_device
    from rst.network.masks import CandidateSet, save_tickets
    ratios = keep_ratio_list(args.keep_ratios)
    device = resolve_device(args.device)
    if len(ratios) > 1 and not args.quiet:
        note_batched_on_cpu(device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    bar = StepBar(f"search {len(ratios)} tickets in one pass", args.quiet)
    try:
        results = search_tickets(cfg, ratios, device=device, data_dir=args.data_dir, workdir=out,
                                 resume=args.resume, progress=bar, allow_changes=tuple(args.allow_changes))
    except ValueError as e:
        raise UsageError(str(e)) from None
    finally:
        bar.close()
    cs = CandidateSet(results[0].spec, [r.ticket for r in results])
    for i, r in enumerate(results):
        r.ticket.metrics.update(final_test_metrics(cs.model(i, device=device), cfg, args))
    path = save_tickets(out / "tickets.rst.safetensors", cs)
    write_json(out / "log.json", {"command": "search", "batched": True, "config": cfg.to_dict(),
                                  "network": cs.spec.to_dict(), "provenance": results[0].provenance,
                                  "tickets": [{"keep_ratio": r.config.keep_ratio, "best_epoch": r.best_epoch,
                                               "metrics": r.ticket.metrics, "history": r.history}
                                              for r in results]})
    print(f"{len(results)} tickets written to {path}")
    for r in results:
        print_metrics(r.ticket.metrics, prefix=f"{r.ticket.name:10s} ")
    return 0


def note_batched_on_cpu(device) -> None:
    """On a CPU, say on stderr that one batched pass is meant for GPUs."""
    if device.type == "cpu":
        print("note: on a CPU one batched pass measured slower than one search per ticket (0.79x, README "
              "'Several tickets in one pass'); it is meant for GPUs", file=sys.stderr)


def _cmd_train(args) -> int:
    """``train``: the dense adversarial-training baseline into ``OUT/dense_at.weights.safetensors``."""
    from rst.search.distributed import is_main
    from rst.search.train import train_dense
    cfg = config_from_args(args)
    device = _rank_device(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bar = StepBar("dense adversarial training", args.quiet or not is_main())
    try:
        result = train_dense(cfg, device=device, data_dir=args.data_dir, workdir=args.out,
                             resume=args.resume, progress=bar,
                             allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same weights; rank 0 evaluates and writes them
        return 0
    return save_trained(result, cfg, args, "dense_at", {})


def _cmd_finetune(args) -> int:
    """``finetune``: a ticket's weights trained under its frozen mask into ``OUT/ft_MODE.weights.safetensors``."""
    from rst.search.distributed import is_main
    from rst.network.masks import load_tickets
    from rst.search.loop import SearchConfig
    from rst.search.train import finetune
    cs = load_tickets(args.ticket)
    ticket = cs.tickets[args.index]
    # the ticket's own search recipe, unless --preset names another
    recorded = SearchConfig.recipe(ticket.search_config)
    cfg = config_from_args(args, SearchConfig.from_dict(recorded) if recorded else None)
    device = _rank_device(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    bar = StepBar(f"fine-tune ({args.mode})", args.quiet or not is_main())
    try:
        result = finetune(cs, args.index, args.mode, cfg, device=device, data_dir=args.data_dir,
                          workdir=args.out, resume=args.resume, progress=bar,
                          allow_changes=tuple(args.allow_changes))
    finally:
        bar.close()
    if not is_main():   # every rank holds the same weights; rank 0 evaluates and writes them
        return 0
    return save_trained(result, cfg, args, f"ft_{args.mode}", {"source_ticket": ticket.name})

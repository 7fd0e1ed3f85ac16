"""The ``zoo`` commands: ``zoo build PRESET`` (a candidate set, its dense baseline and reports, resumable;
its arguments as a :func:`zoo_plan`) and ``zoo list``; their parsers are :func:`add_zoo_commands`'s."""
from __future__ import annotations

from pathlib import Path

from .input import count, keep_ratio_list, r2s_protocols
from .progress_bars import StepBar
from .run_commands import note_batched_on_cpu
from .run_options import bad_configuration, parse_overrides


def add_zoo_commands(sub) -> None:
    """Register the ``zoo`` group (``build``, ``list``) on the top-level subparser group."""
    zoo = sub.add_parser("zoo", help="build and list ticket zoos").add_subparsers(dest="zoo_command", required=True)
    s = zoo.add_parser("build", help="search a candidate set, its dense baseline and reports (resumable)")
    _add_zoo_build_args(s)
    s.set_defaults(func=_cmd_zoo_build)
    s = zoo.add_parser("list", help="list the zoos in pretrained_masks/index.json")
    s.add_argument("--root", default="pretrained_masks")
    s.set_defaults(func=_cmd_zoo_list)


def _add_zoo_build_args(s) -> None:
    """The flags of ``zoo build``: the plan (preset, keep ratios, report sizes), folders, workers, device."""
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


def zoo_plan(args):
    """The :class:`rst.zoo.build.ZooPlan` of parsed ``zoo build`` arguments (its ``command()`` parses back to it)."""
    from rst.zoo.build import DEFAULT_KEEP_RATIOS, ZooPlan
    ratios = keep_ratio_list(args.keep_ratios) if args.keep_ratios else DEFAULT_KEEP_RATIOS
    with bad_configuration():
        return ZooPlan(args.preset, ratios, zoo_id=args.id, overrides=tuple(parse_overrides(args.set).items()),
                       eval_images=args.eval_images, transfer_images=args.transfer_images,
                       r2s_images=args.r2s_images, autoattack_images=args.autoattack_images,
                       r2s_protocols=tuple(args.r2s_protocols.split(",")) if args.r2s_protocols else ZooPlan.r2s_protocols,
                       autoattack_tickets=args.autoattack_tickets, subset_images=args.subset_images)


def _cmd_zoo_build(args) -> int:
    """``zoo build``: one build per ``--work`` folder of a zoo, under its run lock."""
    from rst.runtime.atomic import ensure_writable_dir
    from rst.runtime.device import resolve_device
    from rst.runtime.runlock import run_lock
    plan = zoo_plan(args)
    if args.batched:
        note_batched_on_cpu(resolve_device(args.device))
    work = ensure_writable_dir(Path(args.work) / plan.id)     # one build per --work folder of a zoo
    with run_lock(work):
        entry = _build_zoo_with_progress(plan, args)
    print(f"{len(entry['tickets'])} tickets in {args.root}/{entry['candidate_set']}")
    return 0


def _build_zoo_with_progress(plan, args) -> dict:
    """:func:`rst.zoo.build.build_zoo` of ``plan`` with the command line's options and a step bar."""
    from rst.runtime.device import resolve_device
    from rst.zoo.build import build_zoo
    bar = StepBar(f"zoo {plan.id}", args.quiet)
    try:
        return build_zoo(plan, root=args.root, work=args.work, device=resolve_device(args.device),
                         data_dir=args.data_dir, progress=print, step_progress=bar, evaluate=not args.no_eval,
                         dense=not args.no_dense, subset_path=args.subset, batched=args.batched, jobs=args.jobs,
                         app_default=args.app_default)
    finally:
        bar.close()


def _cmd_zoo_list(args) -> int:
    """``zoo list``: each zoo of the index and its tickets' clean and PGD-20 accuracy."""
    from rst.zoo.build import read_index
    for z in read_index(args.root)["zoos"]:
        print(f"{z['id']}: {z['title']}  ({len(z['tickets'])} tickets; built with: {z['built_with']})")
        for t in z["tickets"]:
            m = t["metrics"]
            print(f"   {t['name']:10s} clean {m.get('test_clean', {}).get('value', float('nan')):.4f}"
                  f"  PGD-20 {m.get('test_pgd20', {}).get('value', float('nan')):.4f}")
    return 0

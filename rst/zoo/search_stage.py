"""The search stage of a zoo build: one ticket per keep ratio, all from the network of the recipe's seed.

A ticket already in the shipped candidate set (same network, same recipe) is reused, so that a later
build only adds ratios; one a finished search left in the work folder is taken from there; the
others are searched, together in one batched pass, in worker processes, or here one by one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rst.network.masks import load_tickets
from rst.network.tickets import CandidateSet, Ticket
from rst.runtime.checkpoint import ResumeMismatchError
from rst.zoo.build_context import BuildContext
from rst.zoo.dense_stage import DensePlan
from rst.zoo.recipe import _same_recipe
from rst.zoo.training import _build_job, _keep_ticket, _search_ticket


@dataclass(frozen=True)
class FoundTickets:
    """Each keep ratio's ticket before any search: reused from the shipped file, resumed from the work folder, or missing."""
    shipped: dict[float, Ticket]          # the shipped file's tickets of this network and recipe
    shipped_ratios: tuple[float, ...]     # the shipped file's keep ratios, in its order
    found: dict[float, Ticket]            # shipped, or left by a finished search in the work folder
    missing: list[float]                  # still to search

    def unchanged(self, keep_ratios: tuple[float, ...]) -> bool:
        """Does the shipped file hold exactly these keep ratios' tickets (then it is left as it is)?"""
        return bool(self.shipped) and list(self.shipped_ratios) == list(keep_ratios) \
            and all(r in self.shipped for r in keep_ratios)


def _ticket_path(work: Path, r: float) -> Path:
    """Where the search of keep ratio ``r`` leaves its ticket."""
    return work / f"keep{r:g}" / "ticket.rst.safetensors"


def _shipped_tickets(ctx: BuildContext) -> tuple[dict[float, Ticket], tuple[float, ...]]:
    """The shipped candidate set's tickets of this network and recipe by keep ratio, and the file's keep ratios."""
    if not ctx.cs_path.exists():
        return {}, ()
    old = load_tickets(ctx.cs_path)
    ratios = tuple(t.keep_ratio for t in old.tickets)
    if old.spec != ctx.base.network_spec():
        return {}, ratios
    return {t.keep_ratio: t for t in old.tickets
            if _same_recipe(t.search_config, ctx.plan.config(keep_ratio=t.keep_ratio))}, ratios


def _resumed_ticket(ctx: BuildContext, r: float, tfile: Path) -> Ticket:
    """The ticket a finished search left at ``tfile``; refused when it was searched with another recipe."""
    ctx.log(f"keep_ratio {r:g}: found {tfile}")
    ticket = load_tickets(tfile).tickets[0]
    if not _same_recipe(ticket.search_config, ctx.plan.config(keep_ratio=r)):   # the shipped tickets' check
        raise ResumeMismatchError(f"cannot reuse {tfile}: it was searched with another recipe; "
                                  "start a new --work folder, or delete this one")
    return ticket


def find_tickets(ctx: BuildContext) -> FoundTickets:
    """Each keep ratio's ticket from the shipped file or the work folder, or marked missing."""
    shipped, shipped_ratios = _shipped_tickets(ctx)
    found, missing = {}, []
    for r in ctx.plan.keep_ratios:
        tfile = _ticket_path(ctx.work, r)
        if r in shipped:
            ctx.log(f"keep_ratio {r:g}: reusing the shipped ticket")
            found[r] = shipped[r]
        elif tfile.exists():
            found[r] = _resumed_ticket(ctx, r, tfile)
        else:
            missing.append(r)
    return FoundTickets(shipped, shipped_ratios, found, missing)


def _search_batched(ctx: BuildContext, missing: list[float]) -> dict[float, Ticket]:
    """The missing keep ratios searched together in one batched pass (:mod:`rst.search.batched`)."""
    from rst.search.batched import search_tickets
    ctx.log(f"keep ratios {','.join(f'{r:g}' for r in missing)}: searching together in one "
            f"batched pass ({ctx.base.epochs} epochs)")
    wdir = ctx.work / ("batched-" + "_".join(f"{r:g}" for r in missing))
    x_test, y_test = ctx.test_images
    return {result.config.keep_ratio: _keep_ticket(result, ctx.work, ctx.device, x_test, y_test)
            for result in search_tickets(ctx.base, missing, device=ctx.device, data=ctx.data, workdir=wdir,
                                         resume=True, progress=ctx.step_progress)}


def _search_in_workers(ctx: BuildContext, missing: list[float], dense: DensePlan) -> dict[float, Ticket]:
    """The missing keep ratios searched in worker processes, the dense baseline beside them when it is due."""
    from rst.runtime.workers import run_jobs
    what = [f"keep_ratio {r:g}" for r in missing] + (["the dense baseline"] if dense.todo else [])
    ctx.log(f"searching {', '.join(what)} ({ctx.base.epochs} epochs) in {min(ctx.jobs, len(what))} worker "
            f"processes; each prints a line per epoch")
    args = [(ctx.plan, r, str(ctx.work), str(dense.path), str(ctx.device), ctx.data_dir) for r in missing]
    args += [dense.job] if dense.todo else []
    run_jobs(_build_job, args, workers=ctx.jobs, on_result=lambda i, label: ctx.log(f"{label}: done"))
    return {r: load_tickets(_ticket_path(ctx.work, r)).tickets[0] for r in missing}


def _search_here(ctx: BuildContext, missing: list[float]) -> dict[float, Ticket]:
    """The missing keep ratios searched here, one after the other."""
    x_test, y_test = ctx.test_images
    found = {}
    for r in missing:
        ctx.log(f"keep_ratio {r:g}: searching ({ctx.base.epochs} epochs)")
        found[r] = _search_ticket(ctx.plan, r, ctx.work, ctx.device, ctx.data, x_test, y_test, ctx.step_progress)
    return found


def search_stage(ctx: BuildContext, tickets: FoundTickets, dense: DensePlan, batched: bool) -> CandidateSet:
    """The candidate set of the plan's keep ratios: the tickets found, and the missing ones searched."""
    missing = tickets.missing
    if batched and len(missing) > 1:
        searched = _search_batched(ctx, missing)
    elif ctx.jobs > 1 and len(missing) + dense.todo > 1:
        searched = _search_in_workers(ctx, missing, dense)
    else:
        searched = _search_here(ctx, missing)
    found = {**tickets.found, **searched}
    return CandidateSet(ctx.base.network_spec(), [found[r] for r in ctx.plan.keep_ratios])

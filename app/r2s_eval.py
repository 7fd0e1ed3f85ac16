"""The R2S live evaluation: ``rst.r2s.evaluate_r2s`` plus the attacks its protocols do not cover,
the comparison rows and the gallery, cached per argument set."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from compute import attack_config
from store import eval_data
from ui import progress_bar



# attack choice -> (label, how it is computed). "protocol:*" go to rst.r2s.evaluate_r2s;
# "deployed:*" attack the switching model as served (a gradient query sees whichever member the
# switch draws); "member" attacks one member and transfers (glue below).
# what the R2S live page starts with (the benchmark times exactly this): every member of the active set
PAGE_DEFAULTS = {"attack": "protocol:expectation", "switch": "batch", "steps": 10, "n_images": 128, "seed": 0,
                 "compare": True}

R2S_ATTACKS = {
    "protocol:expectation": "Expectation PGD: mean loss over all members (adaptive)",
    "protocol:ensemble": "Ensemble PGD: mean logits of all members (adaptive)",
    "protocol:eot": "EOT-PGD: gradients averaged over sampled switches (adaptive)",
    "protocol:arc": "ARC: toward each member's decision boundary in turn (Dbouk & Shanbhag 2022, adaptive)",
    "protocol:apgd_ce": "APGD-CE on the mean loss over all members (adaptive)",
    "protocol:apgd_dlr": "APGD-DLR on the mean DLR loss over all members (adaptive)",
    "protocol:autoattack_rand": "AutoAttack, version='rand' (adaptive, EOT)",
    "protocol:paper": "Paper's protocol: PGD on one random member, inferred by another (non-adaptive)",
    "deployed:pgd": "PGD on the deployed switching model (naive)",
    "deployed:fgsm": "FGSM on the deployed switching model (naive)",
    "deployed:cw": "CW-L∞ on the deployed switching model (naive)",
    "member": "Transfer from one member: PGD on member i, inferred by R2S (non-adaptive)",
}

@dataclass
class R2SLive:
    table: list[dict]                # one row per attack / single ticket, accuracies as fractions
    per_member: list[dict]           # one row per (attack, member)
    sanity: list[dict]
    report_frame: Any                # rst's R2SReport.to_frame() of the library protocols
    gallery: dict                    # x, x_adv (G, C, H, W) numpy, y, preds clean/adv (K, G), attack label
    members: list[str]
    n_images: int
    data: str
    seconds: float


def _member_accs(r2s, x_adv: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> list[float]:
    """Accuracy of every member on ``x_adv``, as a list of K fractions (exact expectation)."""
    from rst.r2s import member_correct
    dev = next(r2s.parameters()).device
    ok = torch.cat([member_correct(r2s, x_adv[i:i + batch_size].to(dev), y[i:i + batch_size].to(dev)).cpu()
                    for i in range(0, len(y), batch_size)], dim=1)                # (K, N)
    return ok.float().mean(1).tolist()


def _member_preds(r2s, x: torch.Tensor) -> list[list[int]]:
    dev = next(r2s.parameters()).device
    with torch.no_grad():
        return r2s.member_logits(x.to(dev)).argmax(-1).cpu().tolist()          # (K, G)


def _glue_attack(kind: str, r2s, x, y, eps: float, steps: int, seed: int, source_k: int):
    """x_adv for the attacks the library's protocols do not cover (returns x_adv on CPU, description):
    ``deployed:<name>`` attacks the switching model as served (each gradient query sees the member the
    switch draws), ``member`` attacks member ``source_k`` alone (transfer), ``expectation`` is the
    library's exact-EOT loss (used for the gallery of the protocol attacks)."""
    from rst.attacks import run_attack
    from rst.r2s import expectation_loss
    dev = next(r2s.parameters()).device
    name = kind.split(":", 1)[1] if kind.startswith("deployed:") else "pgd"
    cfg = attack_config(name, eps, steps)
    g = torch.Generator(device=dev).manual_seed(seed)
    xd, yd = x.to(dev), y.to(dev)
    if kind == "member":
        with r2s.use_member(source_k):
            x_adv = run_attack(cfg, r2s, xd, yd, generator=g)
        return x_adv.cpu(), f"{cfg.describe()} on member {r2s.names[source_k]} alone, transferred"
    if kind == "expectation":
        x_adv = run_attack(cfg, r2s, xd, yd, generator=g, loss=expectation_loss)
        return x_adv.cpu(), f"{cfg.describe()} on the mean loss over all members (exact expectation)"
    r2s.reseed(seed)
    x_adv = run_attack(cfg, r2s, xd, yd, generator=g)
    return x_adv.cpu(), f"{cfg.describe()} on the deployed switching model (switch='{r2s.switch}')"


def r2s_live(set_key: str, cs, members: tuple[int, ...], switch: str, attack: str, eps: float, steps: int,
             n_images: int, seed: int, dev: str, source_member: int = 0, compare: bool = True,
             gallery_size: int = 8, quiet: bool = False) -> R2SLive:
    """The R2S live evaluation the page shows (cached per session-independent arguments).

    ``compare=True`` also runs the paper's protocol on the same images and settings — K more
    single-member PGD attacks, whose transfer matrix's diagonal is each ticket's white-box accuracy
    (about twice the time of the chosen attack alone)."""
    return _r2s_live(set_key, cs, tuple(members), switch, attack, float(eps), int(steps), int(n_images), int(seed),
                     dev, int(source_member), bool(compare), int(gallery_size), quiet)


@st.cache_data(show_spinner=False, max_entries=16)
def _r2s_live(set_key: str, _cs, members: tuple[int, ...], switch: str, attack: str, eps: float, steps: int,
              n_images: int, seed: int, dev: str, source_member: int, compare: bool, gallery_size: int,
              quiet: bool = False) -> R2SLive:
    from rst.r2s import R2S, evaluate_r2s
    t0 = time.perf_counter()
    data = eval_data(_cs.spec.dataset, n_images)
    x, y = data.x, data.y
    r2s = R2S(_cs, members=list(members), switch=switch, seed=seed, device=dev)
    names = list(r2s.names)
    # the paper's protocol always (its transfer matrix's diagonal is every member's white-box accuracy)
    protocols = ["paper"] if compare or attack == "protocol:paper" else []
    if attack.startswith("protocol:") and attack != "protocol:paper":
        protocols.append(attack.split(":", 1)[1])
    with progress_bar("attack batches:", quiet) as progress:
        report = evaluate_r2s(r2s, x, y, eps=eps, steps=steps, protocols=tuple(protocols), seed=seed,
                              progress=progress)
    rows = {}
    per_member = []
    for res in report.results:
        label = f"R2S · {res.protocol}"
        rows[res.protocol] = {"what": label, "threat model": res.threat_model, "adaptive": bool(res.adaptive),
                              "attack": res.attack, "expected": res.expected_acc,
                              "worst member": res.worst_member_acc, "clean": report.clean_expected_acc}
        per_member += [{"attack": label, "member": n, "accuracy": a} for n, a in zip(names, res.per_member_acc)]
    chosen = attack.split(":", 1)[1] if attack.startswith("protocol:") else None
    table = [rows[chosen]] if chosen else []
    if chosen is None:
        k_src = list(members).index(source_member) if attack == "member" else 0
        x_adv, desc = _glue_attack(attack, r2s, x, y, eps, steps, seed, k_src)
        accs = _member_accs(r2s, x_adv, y)
        label = (f"R2S · transfer from {names[k_src]}" if attack == "member"
                 else f"R2S · {attack.split(':', 1)[1]} on the deployed model")
        table.append({"what": label, "threat model": R2S_ATTACKS[attack], "adaptive": False, "attack": desc,
                      "expected": sum(accs) / len(accs), "worst member": min(accs),
                      "clean": report.clean_expected_acc})
        per_member = [{"attack": label, "member": n, "accuracy": a} for n, a in zip(names, accs)] + per_member
    if chosen != "paper" and "paper" in rows:
        table.append(rows["paper"])
    table.append({"what": "R2S · clean", "threat model": "no attack", "adaptive": False, "attack": "none",
                  "expected": report.clean_expected_acc, "worst member": min(report.clean_per_member_acc),
                  "clean": report.clean_expected_acc})
    # every member alone, attacked white-box: the diagonal of the paper protocol's transfer matrix
    if "paper" in rows:
        paper = report.result("paper")
        diag = [row[k] for k, row in enumerate(paper.extra["transfer_matrix"])]
        for k, name in enumerate(names):
            table.append({"what": f"ticket {name} alone", "threat model": "white-box, single network",
                          "adaptive": True, "attack": paper.attack, "expected": diag[k], "worst member": diag[k],
                          "clean": report.clean_per_member_acc[k]})
    # gallery: the chosen attack's images (the exact expectation attack for the library protocols)
    g_n = min(gallery_size, len(x))
    xg, yg = x[:g_n], y[:g_n]
    if chosen is None:
        xg_adv, g_desc = _glue_attack(attack, r2s, xg, yg, eps, steps, seed,
                                      list(members).index(source_member) if attack == "member" else 0)
    else:
        xg_adv, g_desc = _glue_attack("expectation", r2s, xg, yg, eps, steps, seed, 0)
    gallery = {"x": xg.numpy(), "x_adv": xg_adv.numpy(), "y": yg.tolist(), "clean_preds": _member_preds(r2s, xg),
               "adv_preds": _member_preds(r2s, xg_adv), "attack": g_desc}
    sanity = [{"check": c.name, "passed": bool(c.passed), "detail": c.detail} for c in report.sanity]
    return R2SLive(table, per_member, sanity, report.to_frame(), gallery, names, len(y), data.description,
                   time.perf_counter() - t0)

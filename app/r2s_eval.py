"""The R2S live evaluation, in chunks of images so that the page shows numbers within seconds and
refines them: per chunk, the chosen attack on the switch (``rst.evaluation.adaptive.adaptive_examples``, or the glue
below for the naive and transfer attacks), every member alone under white-box PGD (the paper protocol's
transfer matrix, whose diagonal is each ticket alone), every adversarial batch scored on every member
(exact expectation). Per-image results are kept, so every accuracy has its standard error and R2S
against each ticket its paired interval on the same images."""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import torch

from compute import attack_config
from store import eval_data
from ui import paired


# attack choice -> (label, how it is computed). "protocol:*" go to rst.evaluation.protocols.evaluate_r2s;
# "deployed:*" attack the switching model as served (a gradient query sees whichever member the
# switch draws); "member" attacks one member and transfers (glue below).
# what the R2S live page starts with (the benchmark times exactly this): every member of the active set
PAGE_DEFAULTS = {"attack": "protocol:expectation", "switch": "batch", "steps": 10, "n_images": 128, "seed": 0,
                 "compare": True, "precision": "bf16"}
FIRST_CHUNK, CHUNK = 16, 32  # images in the first chunk (the first numbers) and in each one after (refining)


def chunk_bounds(n: int) -> list[int]:
    """Chunk boundaries over ``n`` images: 0, 16, 48, 80, ... n."""
    return [0] + list(range(min(FIRST_CHUNK, n), n, CHUNK)) + [n]


def default_precision(dev: str) -> str:
    """bf16 autocast for the live attacks where the device has it natively (AVX-512 BF16 / AMX, Ampere+),
    else fp32; the verdicts are always the fp32 members' (``rst.evaluation.verdicts``)."""
    from rst.runtime.speed import bf16_supported
    return "bf16" if bf16_supported(torch.device(dev)) else "fp32"

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


def _member_preds(r2s, x: torch.Tensor) -> list[list[int]]:
    dev = next(r2s.parameters()).device
    with torch.no_grad():
        return r2s.member_logits(x.to(dev)).argmax(-1).cpu().tolist()          # (K, G)


def _glue_attack(kind: str, r2s, x, y, eps: float, steps: int, seed: int, source_k: int):
    """x_adv for the attacks the library's protocols do not cover (returns x_adv on CPU, description):
    ``deployed:<name>`` attacks the switching model as served (each gradient query sees the member the
    switch draws), ``member`` attacks member ``source_k`` alone (transfer), ``expectation`` is the
    library's exact-EOT loss (used for the gallery of the protocol attacks)."""
    from rst.evaluation.attacks import run_attack
    from rst.evaluation.adaptive import expectation_loss
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



@dataclass
class R2SLive:
    table: list[dict]                # one row per attack / single ticket, accuracies as fractions, n and se
    per_member: list[dict]           # one row per (attack, member)
    sanity: list[dict]
    gallery: dict                    # x, x_adv (G, C, H, W) numpy, y, preds clean/adv (K, G), attack label
    members: list[str]
    n_images: int                    # images attacked so far
    n_target: int                    # images asked for
    data: str
    seconds: float
    precision: str
    complete: bool
    per_image: dict | None = None    # clean (K, n), chosen (K, n), paper (K, K, n) or None: per-image results


def build_r2s(cache: dict, cs, set_key: str, members, switch: str, seed: int, dev: str):
    """The R2S module of these members, built once per session and reused across reruns (``cache``:
    a per-session dict holding the last one; never shared between sessions, whose runs mutate it)."""
    from rst.evaluation.r2s import R2S
    key = (set_key, tuple(members), switch, int(seed), dev)
    if cache.get("key") != key:
        r2s = R2S(cs, members=list(members), switch=switch, seed=seed, device=dev, keep_member_weights=True)
        for p in r2s.parameters():
            p.requires_grad_(False)          # the attacks need input gradients only
        cache.clear()
        cache.update(key=key, r2s=r2s)
    return cache["r2s"]


def lane_copy(cache: dict):
    """A second copy of the cached R2S module, for the helper lane of :func:`attack_chunk` (the
    members' ``use_member`` / ``fast_members`` state is per module, so two threads cannot share one).
    The folded copies are built first and copied with it: tracing them in two threads at once fails."""
    if "lane" not in cache:
        import copy
        cache["lane"] = copy.deepcopy(cache["r2s"].build_fast_members())
    return cache["lane"]


def _attack_precision(r2s, precision: str, dev):
    """How the live attacks run: "bf16" under bf16 autocast on the members' BN-folded channels-last
    copies (``R2S.fast_members``: the same functions up to rounding, about 2x faster on this CPU), "fp32"
    on the members themselves. The verdicts are the fp32 members' either way (:func:`attack_chunk`)."""
    from rst.runtime.speed import resolve_speed
    stack = contextlib.ExitStack()
    stack.enter_context(resolve_speed(precision, channels_last=False, compile=False,
                                      device=torch.device(dev)).autocast(torch.device(dev)))
    if precision == "bf16":
        stack.enter_context(r2s.fast_members())
    return stack


def attack_chunk(r2s, attack: str, x, y, *, eps: float, steps: int, seed: int, source_k: int, compare: bool,
                 precision: str, lane=None) -> dict:
    """One chunk: ``clean`` (K, b), ``chosen`` (K, b) float, member k right (for the paper protocol: the
    share of random sources it survives) on the chosen attack's x_adv,
    ``paper`` (K, K, b) (source member, scored member, image) when ``compare``; ``x_adv`` (b, C, H, W).
    Every batch is attacked first (:func:`_attack_precision`), then scored as the members' fp32
    forwards say (``rst.evaluation.verdicts.member_verdicts``: in bf16, near-ties rechecked in fp32, when
    ``precision`` is "bf16"): clean, the K single-member batches, the chosen attack's. ``lane``: a function
    giving a copy of ``r2s`` (:func:`lane_copy`), called only where it is used: on a CPU with two torch
    threads or more, the chosen attack and the K single-member attacks run at once on half of them each,
    and so do the two halves of the scoring (``jobs.two_lanes``)."""
    dev = next(r2s.parameters()).device
    xd, yd = x.to(dev), y.to(dev)
    need_paper = compare or attack == "protocol:paper"
    singles = (lambda r: _single_member_examples(r, xd, yd, eps, steps, seed, precision)) if need_paper else (lambda r: [])
    chosen = (lambda r: []) if attack == "protocol:paper" else (
        lambda r: [_chosen_examples(r, attack, x, y, eps, steps, seed, source_k, precision).to(dev)])
    from rst.evaluation.verdicts import member_verdicts

    def score(r, xbs):
        return [member_verdicts(r, xb, yd, fast=precision == "bf16").cpu() for xb in xbs]
    if (lane is not None and compare and attack != "protocol:paper" and dev.type == "cpu"
            and torch.get_num_threads() >= 2):
        import jobs
        lane = lane()
        adv_chosen, adv_singles = jobs.two_lanes(lambda: chosen(r2s), lambda: singles(lane))
        batches = [xd] + adv_singles + adv_chosen
        half = len(batches) // 2
        mine, theirs = jobs.two_lanes(lambda: score(r2s, batches[:half]), lambda: score(lane, batches[half:]))
        right = torch.stack(mine + theirs)                                         # (batch, K, b)
    else:
        batches = [xd] + singles(r2s) + chosen(r2s)
        right = torch.stack(score(r2s, batches))                                   # (batch, K, b)
    out = {"clean": right[0]}
    if need_paper:
        out["paper"] = right[1:1 + r2s.K]                                          # (K, K, b)
    if attack == "protocol:paper":
        out["chosen"], out["x_adv"] = _expected(out["paper"], r2s), batches[1].cpu()   # (K, b): random source
    else:
        out["chosen"], out["x_adv"] = right[-1].float(), batches[-1].cpu()
    return out


def _single_member_examples(r2s, xd, yd, eps, steps, seed, precision) -> list:
    """White-box PGD on each member alone (the paper protocol's sources; its diagonal is each ticket alone)."""
    from rst.evaluation.attacks import run_attack
    cfg, dev = attack_config("pgd", eps, steps), xd.device
    advs = []
    for k in range(r2s.K):
        g = torch.Generator(device=dev).manual_seed(seed + k)
        with r2s.use_member(k), _attack_precision(r2s, precision, dev):
            advs.append(run_attack(cfg, r2s, xd, yd, generator=g).float())
    return advs


def _chosen_examples(r2s, attack: str, x, y, eps, steps, seed, source_k, precision):
    """x_adv of the chosen attack on the switch (a library protocol, or the glue above), fp32."""
    from rst.evaluation.adaptive import adaptive_examples
    dev = next(r2s.parameters()).device
    if attack.startswith("protocol:"):
        g = torch.Generator(device=dev).manual_seed(seed)
        r2s.reseed(seed)                                 # EOT's sampled switches: reproducible per chunk
        with _attack_precision(r2s, precision, dev):
            x_adv, _ = adaptive_examples(attack.split(":", 1)[1], r2s, x.to(dev), y.to(dev), eps=eps,
                                         alpha=eps / 4, steps=steps, generator=g, seed=seed)
    else:
        with _attack_precision(r2s, precision, dev):
            x_adv, _ = _glue_attack(attack, r2s, x, y, eps, steps, seed, source_k)
    return x_adv.float()


def _cat(parts: list[dict], key: str):
    return torch.cat([p[key] for p in parts], dim=-1) if key in parts[0] else None


def _expected(per_member: torch.Tensor, r2s) -> torch.Tensor:
    """The switch's expectation over the first axis (one entry per member): weighted by its switch
    probabilities alpha (uniform unless the set records others); a single row is returned as it is."""
    per_member = per_member.float()
    if per_member.shape[0] == 1:
        return per_member[0]
    w = r2s.member_probs.float().to(per_member.device)
    return (w.view(-1, *([1] * (per_member.dim() - 1))) * per_member).sum(0)


def _row(what, threat, adaptive, attack, per_member_images, clean_frac, n, r2s, r2s_per_image=None) -> dict:
    """A table row from per-image results (K, n): expected accuracy (alpha-weighted) with its SE over images."""
    exp_img = _expected(per_member_images, r2s)                           # (n,) expected accuracy per image
    expected = float(exp_img.mean())
    se = float(exp_img.std(unbiased=True) / n ** 0.5) * 100 if n > 1 else None
    row = {"what": what, "threat model": threat, "adaptive": adaptive, "attack": attack, "expected": expected,
           "± SE": se, "worst member": float(per_member_images.float().mean(1).min()), "clean": clean_frac, "n": n}
    if r2s_per_image is not None and n > 1:
        d = paired(r2s_per_image, exp_img)
        row["R2S − this (paired)"] = (f"{100 * d['difference']:+.1f} [{100 * d['ci_low']:+.1f}, "
                                      f"{100 * d['ci_high']:+.1f}]")
        row["_paired"] = d
    return row


def summarize(parts: list[dict], names: list[str], attack: str, p: dict, data_desc: str, seconds: float,
              n_target: int, complete: bool, x, y, r2s) -> R2SLive:
    """The page's view of the chunks done so far."""
    clean, chosen, paper = _cat(parts, "clean"), _cat(parts, "chosen"), _cat(parts, "paper")
    n = clean.shape[1]
    chosen_label = {"member": f"R2S · transfer from {names[p['source_k']]}"}.get(attack) or (
        f"R2S · {attack.split(':', 1)[1]}" if attack.startswith("protocol:")
        else f"R2S · {attack.split(':', 1)[1]} on the deployed model")
    adaptive = attack.startswith("protocol:") and attack != "protocol:paper"
    r2s_img = _expected(chosen, r2s)                                        # (n,) R2S expected, per image
    clean_exp = float(_expected(clean, r2s).mean())
    desc = _describe(attack, names, p)
    from rst.evaluation.r2s import THREAT_MODELS
    threat = THREAT_MODELS.get(attack.split(":", 1)[1], R2S_ATTACKS[attack]) if attack.startswith("protocol:") \
        else R2S_ATTACKS[attack]
    table = [_row(chosen_label, threat, adaptive, desc, chosen, clean_exp, n, r2s)]
    per_member = [{"attack": chosen_label, "member": nm, "accuracy": float(a)} for nm, a in zip(names, chosen.mean(1))]
    if paper is not None and attack != "protocol:paper":
        pm = _expected(paper, r2s)                                          # (K, n): random source per target
        table.append(_row("R2S · paper", THREAT_MODELS["paper"], False, _describe("protocol:paper", names, p),
                          pm, clean_exp, n, r2s))
        per_member += [{"attack": "R2S · paper", "member": nm, "accuracy": float(a)} for nm, a in zip(names, pm.mean(1))]
    table.append(_row("R2S · clean", "no attack", False, "none", clean, clean_exp, n, r2s))
    if paper is not None:
        for k, name in enumerate(names):
            diag = paper[k, k].float().unsqueeze(0)                          # (1, n): ticket k alone, white-box
            table.append(_row(f"ticket {name} alone", "white-box, single network", True,
                              _describe("single", names, p), diag, float(clean[k].float().mean()), n, r2s, r2s_img))
    if "gallery" not in parts[0]:           # the first chunk's first images: computed once, kept with it
        g_n = min(8, parts[0]["clean"].shape[1])
        xg_adv = parts[0]["x_adv"][:g_n]
        parts[0]["gallery"] = {"x": x[:g_n].numpy(), "x_adv": xg_adv.numpy(), "y": y[:g_n].tolist(),
                               "clean_preds": _member_preds(r2s, x[:g_n]), "adv_preds": _member_preds(r2s, xg_adv),
                               "attack": desc}
    gallery = parts[0]["gallery"]
    sanity = [{"check": "every attack's expected accuracy <= clean expected accuracy (same images)",
               "passed": all(r["expected"] <= clean_exp + 1e-9 for r in table if r["what"].startswith("R2S ·")),
               "detail": f"{n} images"}]
    return R2SLive(table, per_member, sanity, gallery, names, n, n_target, data_desc, seconds, p["precision"], complete,
                   {"clean": clean, "chosen": chosen, "paper": paper})


def _describe(attack: str, names: list[str], p: dict) -> str:
    from rst.evaluation.adaptive import describe_adaptive
    eps, steps, K = p["eps"], p["steps"], len(names)
    prec = ", attack in bf16 on the members' BN-folded copies" if p["precision"] == "bf16" else ", attack in fp32"
    if attack in ("single", "protocol:paper"):
        base = attack_config("pgd", eps, steps).describe()
        return (f"{base} on the ticket alone" if attack == "single"
                else f"{base} on one member, scored on every member (transfer matrix, no early stop)") + prec
    if attack.startswith("protocol:"):
        return describe_adaptive(attack.split(":", 1)[1], K=K, eps=eps, alpha=eps / 4, steps=steps,
                                 switch=p["switch"]) + prec
    base = attack_config(attack.split(":", 1)[1] if attack.startswith("deployed:") else "pgd", eps, steps).describe()
    return (f"{base} on member {names[p['source_k']]} alone, transferred" if attack == "member"
            else f"{base} on the deployed switching model (switch='{p['switch']}')") + prec


def run_chunks(job, cs, set_key: str, p: dict, cache: dict) -> R2SLive:
    """The live evaluation in chunks of images (:func:`chunk_bounds`); ``job`` is a ``jobs.LiveJob`` (or None):
    each chunk takes the shared CPU pool, and the summary so far is published after every chunk."""
    t0 = time.perf_counter()
    data = eval_data(cs.spec.dataset, p["n_images"])
    x, y = data.x, data.y
    members = list(p["members"])
    p = {**p, "source_k": members.index(p["source_member"]) if p["attack"] == "member" else 0}
    parts, live = [], None
    bounds = chunk_bounds(len(y))
    for ci, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        with (job.cpu() if job is not None else contextlib.nullcontext()):
            r2s = build_r2s(cache, cs, set_key, members, p["switch"], p["seed"], p["dev"])
            if job is not None:
                job.progress(a, len(y), f"attacking images {a + 1}-{b} of {len(y)}")
            parts.append(attack_chunk(r2s, p["attack"], x[a:b], y[a:b], eps=p["eps"], steps=p["steps"],
                                      seed=p["seed"] + 1000 * ci, source_k=p["source_k"], compare=p["compare"],
                                      precision=p["precision"], lane=lambda: lane_copy(cache)))
            live = summarize(parts, list(r2s.names), p["attack"], p, data.description, time.perf_counter() - t0,
                             len(y), b == len(y), x[:b], y[:b], r2s)
        if job is not None:
            job.publish(live)
            job.progress(b, len(y), f"{b} of {len(y)} images attacked")
    return live


def r2s_live(set_key: str, cs, members: tuple[int, ...], switch: str, attack: str, eps: float, steps: int,
             n_images: int, seed: int, dev: str, source_member: int = 0, compare: bool = True,
             precision: str = "fp32", quiet: bool = True) -> R2SLive:
    """The whole live evaluation in this thread (the benchmark and scripts; the page runs ``run_chunks``
    in a ``jobs.LiveJob``)."""
    p = dict(members=tuple(members), switch=switch, attack=attack, eps=float(eps), steps=int(steps),
             n_images=int(n_images), seed=int(seed), dev=dev, source_member=int(source_member), compare=bool(compare),
             precision=precision)
    return run_chunks(None, cs, set_key, p, {})

"""Cached live computations of the Network, Sparsity and Transfer pages and the attributions: thin
``st.cache_data`` wrappers over ``rst`` (keyed by the candidate set's key, never by the set itself)."""
from __future__ import annotations

import json

import streamlit as st
import torch

from reports import TransferView, transfer_from_result
from store import eval_data


@st.cache_data(show_spinner=False, max_entries=32)
def network_summary(spec_json: str) -> dict:
    """Layers, weight counts, init and checksum of the seeded random network of ``spec_json``."""
    from rst.network.masked import masked_layers
    from rst.network.models import NetworkSpec, build_network
    from rst.network.weights import weight_checksum
    spec = NetworkSpec.from_dict(json.loads(spec_json))
    net = build_network(spec)
    layers = list(masked_layers(net))
    names = layer_names([name for name, _ in layers])
    rows = [{"layer": short, "type": "conv" if layer.weight.dim() == 4 else "linear",
             "shape": "×".join(map(str, layer.weight.shape)), "weights": layer.weight.numel()}
            for short, (_, layer) in zip(names, layers)]
    return {"rows": rows, "total": sum(r["weights"] for r in rows), "checksum": weight_checksum(net),
            "bn_layers": sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules()),
            "out_features": [int(layer.weight.shape[0]) for _, layer in layers]}


def layer_names(names: list[str]) -> list[str]:
    """Layer names as the model defines them: the input normaliser wraps every network as
    ``Sequential(normalise, net)``, so masked layers are named ``1.features.0``; the shared ``1.`` goes."""
    prefixes = {n.split(".", 1)[0] for n in names}
    if len(prefixes) == 1 and all("." in n for n in names) and next(iter(prefixes)).isdigit():
        return [n.split(".", 1)[1] for n in names]
    return list(names)


def describe_network(description: str, spec, summary: dict) -> str:
    """What the network *is* at this width, from its layers (not the registry's width-1 description)."""
    import re
    family = re.split(r"[:(]", description, maxsplit=1)[0].strip()
    kinds = [r["type"] for r in summary["rows"]]
    def sizes(kind):
        outs = [o for o, k in zip(summary["out_features"], kinds) if k == kind]
        if not outs:
            return ""
        shown = "-".join(map(str, outs)) if len(outs) <= 6 else f"{outs[0]} … {max(outs)}"
        return f"{len(outs)} {kind} layer{'s' if len(outs) > 1 else ''} ({shown})"
    parts = ", ".join(s for s in (sizes("conv"), sizes("linear")) if s)
    return f"{family} at width ×{spec.width:g}: {parts}; {summary['total']:,} weights"


def spec_json(spec) -> str:
    return json.dumps(spec.to_dict(), sort_keys=True)


@st.cache_data(show_spinner=False, max_entries=64)
def ticket_layer_stats(set_key: str, _cs, index: int) -> list[dict]:
    """``rst.layer_stats`` of ticket ``index``: per layer weights, kept weights, density."""
    from rst.network.masked import layer_stats
    stats = layer_stats(_cs.model(index))
    names = layer_names([r["layer"] for r in stats])
    return [{**r, "layer": n, "shape": "×".join(map(str, r["shape"]))} for n, r in zip(names, stats)]

ATTACK_LABELS = {"pgd": "PGD", "fgsm": "FGSM", "cw": "CW-L∞ (PGD on the margin loss)"}


def attack_config(name: str, eps: float, steps: int, alpha: float | None = None, early_stop: bool = False):
    """An ``AttackConfig``; step size ``eps/4`` unless given (the paper: 2/255 for 8/255)."""
    from rst.evaluation.attacks import AttackConfig
    return AttackConfig(name=name, eps=float(eps), alpha=float(alpha if alpha is not None else eps / 4),
                        steps=int(steps), early_stop=early_stop)

def sparsity_job(job, cs, n_images: int, attack_json: str, dev: str) -> list[dict]:
    """``rst.evaluation.metrics.sparsity_curve`` ticket by ticket in a ``jobs.LiveJob``: each ticket's row is
    published as it lands (one slot of the shared CPU pool per ticket), so Stop keeps the rows done."""
    from rst.evaluation.attacks import AttackConfig
    from rst.evaluation.metrics import sparsity_curve
    from rst.network.masks import CandidateSet
    data = eval_data(cs.spec.dataset, n_images)
    attack = AttackConfig.from_dict(json.loads(attack_json))
    rows = []
    for k, ticket in enumerate(cs.tickets):
        job.progress(k, len(cs), f"attacking ticket {k + 1} of {len(cs)}")
        with job.cpu():
            rows += [dict(r, n_images=len(data.y)) for r in sparsity_curve(CandidateSet(cs.spec, [ticket]), data.x,
                                                                            data.y, attack, device=dev)]
        job.publish(sorted(rows, key=lambda r: r["keep_ratio"]))
    job.progress(len(cs), len(cs), "every ticket attacked")
    return rows


def transfer_job(job, cs, n_images: int, attack_json: str, early_stop: bool, dev: str, chunk: int = 64) -> TransferView:
    """``rst.evaluation.metrics.transfer_matrix`` on chunks of ``chunk`` test images in a ``jobs.LiveJob``: after each
    chunk the matrix over the images done so far (image-weighted mean of the chunks) is published."""
    from rst.evaluation.attacks import AttackConfig
    from rst.evaluation.metrics import transfer_matrix
    data = eval_data(cs.spec.dataset, n_images)
    attack = AttackConfig.from_dict(json.loads(attack_json))
    total, acc, res = len(data.y), None, None
    for a in range(0, total, chunk):
        b = min(total, a + chunk)
        job.progress(a, total, f"attacking images {a + 1}-{b} of {total}")
        with job.cpu():
            res = transfer_matrix(cs, data.x[a:b], data.y[a:b], attack, early_stop=early_stop, device=dev,
                                  seed=a)
        acc = res.matrix * (b - a) if acc is None else acc + res.matrix * (b - a)
        res.matrix, res.n_images = acc / b, b
        job.publish(transfer_from_result(res, f"computed live on the first {b} of {data.description}"))
    job.progress(total, total, "done")
    return job.partial

@st.cache_data(show_spinner=False, max_entries=32)
def attributions(set_key: str, _cs, members: tuple[int, ...], image_index: int, method: str,
                 n_images: int, dev: str) -> dict:
    """Captum attributions of test image ``image_index`` for every member (w.r.t. the true class)."""
    from captum.attr import IntegratedGradients, Saliency
    data = eval_data(_cs.spec.dataset, n_images)
    x = data.x[image_index:image_index + 1]
    y = int(data.y[image_index])
    maps, preds = [], []
    for i in members:
        model = _cs.model(i, device=dev)
        xi = x.to(dev).clone().requires_grad_(True)          # never flag the cached tensor
        if method == "IntegratedGradients":
            attr = IntegratedGradients(model).attribute(xi, baselines=torch.zeros_like(xi), target=y, n_steps=32)
        else:
            attr = Saliency(model).attribute(xi, target=y, abs=True)
        maps.append(attr.detach().cpu()[0].sum(0).numpy())                 # (H, W), channels summed
        with torch.no_grad():
            preds.append(int(model(x.to(dev)).argmax(1)))
    return {"image": x[0].numpy(), "label": y, "maps": maps, "preds": preds,
            "names": [_cs.tickets[i].name or f"ticket {i}" for i in members]}

"""Paired comparison of tickets searched with different inner attacks (README, "Single-step search").

Run after the three searches of the README (runs/ss-pgd, runs/ss-n_fgsm, runs/ss-fgsm_rs):
PGD-20 (eps 0.1, step 0.025) on the first 1,000 Fashion-MNIST test images, per-image correctness,
each accuracy with its binomial standard error and each difference against PGD with a paired 95 % interval.

    RST_DATA_DIR=/path/to/fashion-mnist python bench/inner_attacks_paired.py
"""
import math

import torch
from rst.network.masks import load_tickets
from rst.data.datasets import load_dataset
from rst.evaluation.metrics import adversarial_examples, predict
from rst.evaluation.attacks import AttackConfig
torch.set_num_threads(1)
x, y = load_dataset("fashion_mnist", train=False, data_dir=None)
x, y = x[:1000], y[:1000]
att = AttackConfig("pgd", eps=0.1, alpha=0.025, steps=20)
ok = {}
for a in ["pgd", "n_fgsm", "fgsm_rs"]:
    cs = load_tickets(f"runs/ss-{a}/ticket.rst.safetensors")
    m = cs.model(0)
    xa = adversarial_examples(m, x, y, att, 250, 0)
    ok[a] = (predict(m, xa) == y).float()
    p = ok[a].mean().item(); print(a, f"{100*p:.1f} ± {100*math.sqrt(p*(1-p)/len(y)):.1f}")
for a in ["n_fgsm", "fgsm_rs"]:
    d = ok[a] - ok["pgd"]; mu = d.mean().item(); se = d.std().item() / math.sqrt(len(d))
    print(f"{a} - pgd: {100*mu:+.1f} points, 95% paired CI [{100*(mu-1.96*se):+.1f}, {100*(mu+1.96*se):+.1f}]")

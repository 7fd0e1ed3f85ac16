"""Evaluation over a candidate set: sparsity curve, transfer matrix, sanity checks, AutoAttack,
result files and the ``eval`` commands (rst.evaluation.metrics, rst.evaluation.sanity, rst.evaluation.autoattack, rst.evaluation.reports,
rst.cli.eval_commands).

Tiny tickets (quarter-width Conv-4, synthetic data, two short search epochs per keep ratio) are
built once per session and shared with tests/test_r2s.py through a file in pytest's basetemp.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import pytest
import torch
import torch.nn as nn

import rst.evaluation.metrics as evaluate
from rst.evaluation.attacks import AttackConfig
from rst.data.datasets import synthetic_dataset
from rst.evaluation.metrics import robust_accuracy, sparsity_curve, transfer_matrix
from rst.network.masks import CandidateSet

from conftest import TINY_KEEP_RATIOS as KEEP_RATIOS
EPS = 0.02
ATTACK = AttackConfig("pgd", eps=EPS, alpha=EPS / 4, steps=10)


@pytest.fixture(scope="session")
def tiny_cs_path(tiny_cs, tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "rst_eval_tiny_tickets.rst.safetensors"


@pytest.fixture(scope="session")
def test_images():
    return synthetic_dataset(64, seed=1)


class _AttackCounter:
    """Wraps rst.evaluation.metrics.run_attack: counts calls and records the configs."""

    def __init__(self, fn):
        self.fn, self.configs = fn, []

    def __call__(self, cfg, *args, **kwargs):
        self.configs.append(cfg)
        return self.fn(cfg, *args, **kwargs)


# --------------------------------------------------------------------------------------------
# sparsity curve and transfer matrix
# --------------------------------------------------------------------------------------------


def test_transfer_diagonal_is_whitebox_robust_accuracy(tiny_cs, test_images):
    x, y = test_images
    tr = transfer_matrix(tiny_cs, x, y, ATTACK, seed=3)
    assert tr.matrix.shape == (3, 3)
    assert tr.names == [t.name for t in tiny_cs.tickets] and tr.keep_ratios == list(KEEP_RATIOS)
    for k in range(3):
        assert float(tr.matrix[k, k]) == robust_accuracy(tiny_cs.model(k), x, y, ATTACK, seed=3)
    # the same matrix from K separate models, and from the R2S module's members
    from rst.evaluation.r2s import R2S
    as_models = transfer_matrix([tiny_cs.model(k) for k in range(3)], x, y, ATTACK, seed=3)
    as_r2s = transfer_matrix(R2S(tiny_cs), x, y, ATTACK, seed=3)
    assert torch.equal(as_models.matrix, tr.matrix) and torch.equal(as_r2s.matrix, tr.matrix)
    # white-box attacks hurt more than transferred ones here (the paper's observation)
    d = tr.to_dict()
    assert d["diagonal_mean"] < d["off_diagonal_mean"]
    assert set(d) >= {"names", "keep_ratios", "matrix", "attack", "early_stop", "n_images", "label"}


def test_transfer_attacks_each_source_once(tiny_cs, test_images, monkeypatch):
    x, y = test_images
    counter = _AttackCounter(evaluate.run_attack)
    monkeypatch.setattr(evaluate, "run_attack", counter)
    transfer_matrix(tiny_cs, x, y, AttackConfig("pgd", eps=EPS, alpha=EPS / 4, steps=2), batch_size=64)
    assert len(counter.configs) == 3                    # K attacks, not K^2
    counter.configs.clear()
    transfer_matrix(tiny_cs, x, y, AttackConfig("pgd", eps=EPS, alpha=EPS / 4, steps=2), batch_size=32)
    assert len(counter.configs) == 3 * 2                # K sources x 2 batches


def test_early_stop_is_labelled_and_changes_the_protocol(tiny_cs, test_images, monkeypatch):
    x, y = test_images
    counter = _AttackCounter(evaluate.run_attack)
    monkeypatch.setattr(evaluate, "run_attack", counter)
    # eps large enough that sources are fooled early and would keep pushing: at EPS = 0.02 the tiny
    # tickets are so rarely fooled that both protocols can give the same 64-image matrix
    strong = AttackConfig("pgd", eps=0.05, alpha=0.0125, steps=10)
    # the flag wins over the attack config's own early_stop
    plain = transfer_matrix(tiny_cs, x, y, dataclasses.replace(strong, early_stop=True))
    assert not any(c.early_stop for c in counter.configs)
    counter.configs.clear()
    early = transfer_matrix(tiny_cs, x, y, strong, early_stop=True)
    assert counter.configs and all(c.early_stop for c in counter.configs)

    assert not plain.early_stop and early.early_stop
    assert plain.label == "transfer, source attacked WITHOUT early stop"
    assert "WITH source-side early stop" in early.label and "inflated" in early.label
    assert "no early stop" in plain.attack and "no early stop" not in early.attack
    assert not torch.equal(plain.matrix, early.matrix)
    # Early stop freezes an example as soon as the source misclassifies it (it stops moving), so it
    # stays fooled; an example never fooled follows the same trajectory as without early stop
    # (per-example PGD, BN in eval mode). Hence, exactly: white-box accuracy with early stop <= without.
    assert (early.matrix.diagonal() <= plain.matrix.diagonal()).all()


def test_sparsity_curve_rows(tiny_cs, test_images):
    x, y = test_images
    shuffled = CandidateSet(tiny_cs.spec, [tiny_cs.tickets[i] for i in (2, 0, 1)], tiny_cs.weight_checksum)
    calls = []
    rows = sparsity_curve(shuffled, x, y, ATTACK, seed=3, progress=lambda d, t: calls.append((d, t)))
    assert [r["keep_ratio"] for r in rows] == list(KEEP_RATIOS)
    assert calls[-1] == (3, 3)
    for k, row in enumerate(rows):
        assert set(row) == {"name", "keep_ratio", "clean", "robust", "attack"}
        assert row["name"] == tiny_cs.tickets[k].name and row["attack"] == ATTACK.describe()
        assert row["robust"] == robust_accuracy(tiny_cs.model(k), x, y, ATTACK, seed=3)
        assert 0.0 < row["robust"] <= row["clean"]


# --------------------------------------------------------------------------------------------
# sanity checks
# --------------------------------------------------------------------------------------------


class Quantized(nn.Module):
    """Gradient masking by construction: inputs rounded to 8 grey levels (``round`` has zero gradient).

    PGD sees a zero gradient everywhere (only its random start moves the input), while the
    classifier itself is barely changed, so a black-box attack still finds adversarial examples.
    """

    def __init__(self, model: nn.Module, levels: int = 8):
        super().__init__()
        self.model, self.levels = model, levels

    def forward(self, x):
        return self.model(torch.round(x * (self.levels - 1)) / (self.levels - 1))


def test_sanity_checks_pass_on_a_normal_ticket(tiny_cs, test_images):
    from rst.evaluation.sanity import sanity_checks
    x, y = test_images
    model = tiny_cs.model(1)
    checks = sanity_checks(model, x[:32], y[:32], eps=0.05, eps_grid=[0.05, 0.5], steps=(3, 10),
                           square_queries=100, restarts=(1, 2), autoattack=("apgd-ce",))
    by_name = {c.name: c for c in checks}
    assert list(by_name) == ["eps_to_zero", "more_steps", "blackbox_not_stronger", "more_restarts", "autoattack_le_pgd"]
    assert by_name["more_restarts"].passed, by_name["more_restarts"].detail
    assert by_name["autoattack_le_pgd"].passed, by_name["autoattack_le_pgd"].detail
    assert by_name["eps_to_zero"].passed, by_name["eps_to_zero"].detail
    assert by_name["more_steps"].passed, by_name["more_steps"].detail
    assert by_name["blackbox_not_stronger"].passed, by_name["blackbox_not_stronger"].detail
    assert not model.training


def test_sanity_checks_flag_gradient_masking(tiny_cs, test_images):
    from rst.evaluation.sanity import sanity_checks
    x, y = test_images
    masked = Quantized(tiny_cs.model(1)).eval()
    checks = sanity_checks(masked, x[:32], y[:32], eps=0.05, eps_grid=[0.05, 0.5], steps=(3, 10),
                           square_queries=100, restarts=None, autoattack=None)
    by_name = {c.name: c for c in checks}
    assert not by_name["eps_to_zero"].passed
    assert "masked" in by_name["eps_to_zero"].detail
    assert not by_name["blackbox_not_stronger"].passed
    assert "Square" in by_name["blackbox_not_stronger"].detail


# --------------------------------------------------------------------------------------------
# AutoAttack
# --------------------------------------------------------------------------------------------


def test_autoattack_accuracy_on_a_tiny_ticket(tiny_cs, test_images, capsys):
    from rst.evaluation.autoattack import autoattack_accuracy
    x, y = test_images
    model = tiny_cs.model(1).train()           # evaluated in eval mode, mode restored
    rng = torch.get_rng_state()
    res = autoattack_accuracy(model, x[:8], y[:8], eps=0.05, version="custom", attacks=["apgd-ce"], seed=0)
    assert model.training
    assert torch.equal(torch.get_rng_state(), rng)          # AutoAttack's global seeding is undone
    assert set(res) >= {"clean", "robust", "version", "attacks", "n_images", "eps", "log"}
    assert res["attacks"] == ["apgd-ce"] and res["n_images"] == 8 and res["version"] == "custom"
    assert 0.0 <= res["robust"] <= res["clean"]
    assert "apgd-ce" in res["log"]
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError):
        autoattack_accuracy(model, x[:8], y[:8], eps=0.05, version="standard", attacks=["apgd-ce"])


# --------------------------------------------------------------------------------------------
# result files and the eval commands
# --------------------------------------------------------------------------------------------


def test_write_report_with_provenance(tmp_path, tiny_cs, test_images):
    import pandas as pd

    from rst.evaluation.reports import curve_figure, transfer_figure, write_report
    x, y = test_images
    rows = [{"name": "a", "keep_ratio": 0.1, "clean": 0.5, "robust": 0.2, "attack": "PGD"},
            {"name": "b", "keep_ratio": 0.5, "clean": 0.6, "robust": float("nan"), "attack": "PGD"}]
    paths = write_report(tmp_path / "out", "curve", {"rows": rows, "t": torch.tensor([1.0, 2.0])},
                         pd.DataFrame(rows), curve_figure(rows))
    doc = json.loads(paths["json"].read_text())
    assert doc["rows"][1]["robust"] is None and doc["t"] == [1.0, 2.0]
    assert {"versions", "git_revision", "created"} <= set(doc["provenance"])
    assert doc["files"] == {"csv": "curve.csv", "png": "curve.png"}
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(pd.read_csv(paths["csv"])) == 2
    tr = transfer_matrix(tiny_cs, x[:8], y[:8], AttackConfig("pgd", eps=EPS, alpha=EPS / 4, steps=1))
    paths = write_report(tmp_path / "out", "transfer", {"transfer": tr}, tr.to_frame(), transfer_figure(tr))
    assert json.loads(paths["json"].read_text())["transfer"]["label"] == tr.label


def _eval_parser():
    """The ``python -m rst eval`` group as rst.cli.commands builds it, with these commands added."""
    from rst.cli.eval_commands import add_eval_commands
    p = argparse.ArgumentParser(prog="python -m rst")
    sub = p.add_subparsers(dest="command", required=True)
    ev = sub.add_parser("eval").add_subparsers(dest="eval_command", required=True)
    add_eval_commands(ev)
    return p


@pytest.mark.parametrize("command, name", [
    (["curve"], "curve"),
    (["transfer", "--early-stop"], "transfer_early_stop"),
    (["r2s", "--protocols", "paper,expectation,ensemble", "--members", "0,2"], "r2s"),
    (["autoattack", "--attacks", "apgd-ce", "--tickets", "1"], "autoattack"),
])
def test_eval_commands_write_reports(command, name, tiny_cs_path, tmp_path, capsys):
    out = tmp_path / "eval"
    args = _eval_parser().parse_args(["eval", command[0], str(tiny_cs_path), *command[1:], "--images", "16",
                                      "--steps", "3", "--eps", "0.02", "--device", "cpu", "--out", str(out),
                                      "--quiet"])
    assert args.func(args) == 0
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["provenance"]["git_revision"] and doc["n_images"] == 16
    assert doc["network"]["arch"] == "fmnist_conv4" and doc["command"] == f"eval {command[0]}"
    assert (out / f"{name}.csv").stat().st_size > 0
    assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "written:" in printed
    if name == "r2s":
        assert doc["r2s"]["config"]["members"] == [0, 2]
        assert [r["protocol"] for r in doc["r2s"]["results"]] == ["paper", "expectation", "ensemble"]
        assert "worst_case_adaptive" in printed
    if name == "transfer_early_stop":
        assert doc["transfer"]["early_stop"] is True and "inflated" in printed


# --------------------------------------------------------------------------------------------
# like with like: rst.evaluation.compare and `eval r2s --protocols all`
# --------------------------------------------------------------------------------------------


def test_paired_difference_and_standard_error_by_hand():
    from rst.evaluation.compare import paired_difference, standard_error
    assert standard_error(0.5, 100) == pytest.approx(0.05)
    a = torch.tensor([1.0, 1.0, 0.5, 0.0, 1.0, 0.5])
    b = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    d = (a - b).double()
    res = paired_difference(a, b)
    se = float(d.std()) / 6 ** 0.5
    assert res["difference"] == pytest.approx(float(d.mean())) and res["se"] == pytest.approx(se)
    assert res["ci_low"] == pytest.approx(float(d.mean()) - 1.96 * se)
    assert res["significant"] == (res["ci_low"] > 0 or res["ci_high"] < 0)
    assert res["n_only_first"] == 3 and res["n_only_second"] == 1
    same = paired_difference(torch.ones(50), torch.zeros(50))
    assert same["significant"] and same["difference"] == 1.0
    with pytest.raises(ValueError):
        paired_difference(torch.ones(3), torch.ones(4))


def test_compare_like_with_like_rows_worst_cases_and_round_trip(tiny_cs, test_images, monkeypatch):
    from rst.evaluation.compare import CompareReport, SuiteConfig, compare_like_with_like
    from rst.evaluation.ensemble_attacks import expected_accuracy
    from rst.evaluation.r2s import R2S
    x, y = test_images
    cfg = SuiteConfig(steps=3, long_steps=3, long_restarts=2, apgd_steps=3, arc_steps=1, eot_samples=2,
                      apgd_t_targets=1)
    dense = tiny_cs.model(0)          # stands in for a dense baseline
    seen = []
    rep = compare_like_with_like(tiny_cs, x, y, eps=0.05, dense=dense, r2s_images=12, single_images=20, cfg=cfg,
                                 on_row=lambda r: seen.append(len(r.rows)))
    assert seen == [1, 2, 3, 4, 5]
    assert [r.kind for r in rep.rows] == ["r2s", "ticket", "ticket", "ticket", "dense"]
    r2s_row = rep.rows[0]
    assert r2s_row.n_images == 12 and all(r.n_images == 20 for r in rep.rows[1:])
    clean = expected_accuracy(R2S(tiny_cs), x[:12], y[:12])
    assert (torch.tensor(r2s_row.per_image) <= clean + 1e-6).all()       # worst case never above clean
    assert r2s_row.clean == pytest.approx(float(clean.mean()))
    for r in rep.rows:
        accs = [a["acc_after"] for a in r.attacks]
        assert accs == sorted(accs, reverse=True) and accs[-1] == pytest.approx(r.worst_case)   # cumulative
        assert r.worst_case <= r.clean + 1e-9
        assert r.se == pytest.approx((r.worst_case * (1 - r.worst_case) / r.n_images) ** 0.5)
    # a ticket alone under plain PGD-20 is never stronger than its worst case over the whole suite
    from rst.evaluation.metrics import robust_accuracy
    pgd20 = robust_accuracy(tiny_cs.model(1), x[:20], y[:20], AttackConfig("pgd", eps=0.05, alpha=0.0125, steps=3))
    assert rep.rows[2].worst_case <= pgd20 + 1e-9
    best = rep.paired["best_member"]
    assert best["name"] in [r.name for r in rep.rows if r.kind == "ticket"] and best["n_images"] == 12
    assert best["model_acc"] == max(rep.paired["per_model"][r.name]["model_acc"] for r in rep.rows[1:4])
    assert rep.paired["dense"]["name"] == "dense AT"
    again = CompareReport.from_dict(json.loads(json.dumps(rep.to_dict())))
    assert [r.per_image for r in again.rows] == [r.per_image for r in rep.rows]
    # reuse (rows read back from JSON): nothing recomputed, same numbers
    import rst.evaluation.compare

    def no_attacks(*a, **k):
        raise AssertionError("a reused row was recomputed")
    monkeypatch.setattr(rst.evaluation.compare, "single_worst_case", no_attacks)
    monkeypatch.setattr(rst.evaluation.compare, "r2s_worst_case", no_attacks)
    reused = compare_like_with_like(tiny_cs, x, y, eps=0.05, dense=dense, r2s_images=12, single_images=20, cfg=cfg,
                                    reuse=[again])
    assert reused.to_dict() == rep.to_dict()


def test_concat_reports_joins_consecutive_image_ranges_and_refuses_mismatched_parts(tiny_cs, test_images):
    from rst.evaluation.compare import SuiteConfig, compare_like_with_like, concat_reports
    x, y = test_images
    cfg = SuiteConfig(steps=2, long_steps=2, long_restarts=1, apgd_steps=2, arc_steps=1, eot_samples=1,
                      apgd_t_targets=1, r2s_suite=("expectation", "arc"))
    name = tiny_cs.tickets[1].name

    def part(s, e, c=cfg):
        return compare_like_with_like(tiny_cs, x[s:e], y[s:e], eps=0.05, r2s_images=e - s, single_images=e - s,
                                      cfg=c, rows=("r2s", name))
    a, b = part(0, 4), part(4, 10)
    whole = concat_reports([a, b])
    assert whole.config["r2s_images"] == whole.config["single_images"] == 10
    for i, row in enumerate(whole.rows):
        ra, rb = a.rows[i], b.rows[i]
        assert row.n_images == 10 and row.per_image == ra.per_image + rb.per_image
        assert row.worst_case == pytest.approx(sum(row.per_image) / 10)
        assert row.se == pytest.approx((row.worst_case * (1 - row.worst_case) / 10) ** 0.5)
        assert row.clean == pytest.approx((4 * ra.clean + 6 * rb.clean) / 10)
        assert [t["acc_after"] for t in row.attacks] == pytest.approx(
            [(4 * p["acc_after"] + 6 * q["acc_after"]) / 10 for p, q in zip(ra.attacks, rb.attacks)])
    per_member = whole.rows[0].extra["worst_case_per_member"]
    assert per_member == pytest.approx([(4 * p + 6 * q) / 10 for p, q in zip(a.rows[0].extra["worst_case_per_member"],
                                                                              b.rows[0].extra["worst_case_per_member"])])
    assert whole.paired["best_member"]["name"] == name and whole.paired["best_member"]["n_images"] == 10
    with pytest.raises(ValueError, match="suite"):
        concat_reports([a, part(4, 6, dataclasses.replace(cfg, steps=3))])
    other = compare_like_with_like(tiny_cs, x[4:6], y[4:6], eps=0.05, r2s_images=2, single_images=2, cfg=cfg,
                                   rows=("r2s",))
    with pytest.raises(ValueError, match="rows"):
        concat_reports([a, other])
    with pytest.raises(ValueError):
        concat_reports([])


def test_eval_r2s_protocols_all_writes_the_like_with_like_table(tiny_cs_path, tmp_path, capsys):
    out = tmp_path / "eval"
    args = _eval_parser().parse_args(["eval", "r2s", str(tiny_cs_path), "--protocols", "all", "--images", "8",
                                      "--single-images", "12", "--steps", "2", "--long-steps", "2",
                                      "--apgd-steps", "2", "--apgd-t-targets", "1", "--eot-samples", "1",
                                      "--eps", "0.02", "--device", "cpu", "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    doc = json.loads((out / "r2s_compare.json").read_text())
    assert doc["complete"] and doc["command"] == "eval r2s --protocols all"
    rows = doc["compare"]["rows"]
    assert rows[0]["kind"] == "r2s" and rows[0]["n_images"] == 8 and rows[1]["n_images"] == 12
    assert [a["attack"] for a in rows[0]["attacks"]] == ["expectation", "ensemble", "eot", "apgd_ce", "apgd_dlr", "arc"]
    assert [a["attack"] for a in rows[1]["attacks"]] == ["pgd20", "pgd_long", "apgd_t"]
    printed = capsys.readouterr().out
    assert "R2S - best member" in printed and "95% CI" in printed

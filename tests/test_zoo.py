"""The ticket zoo: the shipped tickets reproduce their numbers; the build pipeline on `tiny`."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from rst.data.datasets import load_subset
from rst.evaluation.metrics import accuracy
from rst.network.masks import load_tickets, load_weights
from rst.zoo.build import ZooPlan, build_zoo, read_index

REPO = Path(__file__).resolve().parents[1]
INDEX = read_index(REPO / "pretrained_masks")
SUBSET = REPO / "assets" / "fashion_mnist_test_subset.safetensors"


@pytest.fixture
def short_autoattack(monkeypatch):
    """AutoAttack standard with 10 APGD iterations and 100 Square queries, for builds in this process:
    these tests check the stage's spans, resumption and rows, not AutoAttack's strength."""
    import functools

    import rst.evaluation.autoattack as aa
    monkeypatch.setattr(aa, "autoattack_examples", functools.partial(aa.autoattack_examples, n_queries=100, n_iter=10))


def test_shipped_zoo_is_listed_and_small():
    total = sum(f.stat().st_size for f in (REPO / "pretrained_masks").rglob("*") if f.is_file())
    assert total <= 20 * 2**20
    for zoo in INDEX["zoos"]:
        assert (REPO / "pretrained_masks" / zoo["candidate_set"]).exists()
        if zoo.get("kind") == "boosted":     # a boosted switch is a search, not a zoo build
            assert zoo["built_with"].startswith("python -m rst search") and "--boosted" in zoo["built_with"]
        else:
            assert zoo["built_with"].startswith("python -m rst zoo build")
        for t in zoo["tickets"]:
            assert {"test_clean", "test_pgd20", "subset_clean"} <= set(t["metrics"])


# The default zoo and the small one in the default run; the other random draws and recipes (5-15 s each)
# with RUN_SLOW=1.
QUICK_ZOOS = ("fmnist-wide", "fmnist-cpu")


@pytest.mark.parametrize("zoo", [z if z["id"] in QUICK_ZOOS else pytest.param(z, marks=pytest.mark.slow)
                                 for z in INDEX["zoos"]], ids=[z["id"] for z in INDEX["zoos"]])
def test_every_shipped_ticket_reproduces_its_recorded_subset_accuracy_exactly(zoo):
    cs = load_tickets(REPO / "pretrained_masks" / zoo["candidate_set"])      # verifies the weight checksum
    x, y, meta = load_subset(SUBSET)
    assert meta["dataset"] == zoo["dataset"]
    for i, (t, listed) in enumerate(zip(cs.tickets, zoo["tickets"])):
        assert t.keep_ratio == listed["keep_ratio"]
        recorded = t.metrics["subset_clean"]["value"]
        assert accuracy(cs.model(i), x, y) == recorded, t.name
        assert listed["metrics"]["subset_clean"]["value"] == recorded
    if zoo.get("dense_baseline"):
        model, dmeta = load_weights(REPO / "pretrained_masks" / zoo["dense_baseline"])
        assert dmeta["kind"] == "dense_at"


def test_zoo_build_pipeline_on_tiny_and_resume(tmp_path, short_autoattack):
    plan = ZooPlan("tiny", keep_ratios=(0.3, 0.6), overrides=(("epochs", 1), ("val_images", 32)),
                   eval_images=32, transfer_images=32, r2s_images=32, autoattack_images=8)
    messages = []
    # the first build in 2 worker processes (rst.runtime.workers), without AutoAttack (which the
    # fixture shortens in this process only); the second adds the AutoAttack report and nothing else
    no_aa = ZooPlan(**{**plan.__dict__, "autoattack_images": 0})
    entry = build_zoo(no_aa, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append, jobs=2)
    assert any("in 2 worker processes" in m for m in messages), messages
    assert entry["built_with"].endswith("--jobs 2")
    assert "autoattack" not in entry["reports"]
    first, messages = messages, []
    entry = build_zoo(plan, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append)
    assert any("AutoAttack" in m for m in messages), messages
    assert not any("searching" in m or "adversarial training" in m for m in messages), messages
    index = json.loads((tmp_path / "zoo" / "index.json").read_text())
    assert [z["id"] for z in index["zoos"]] == ["tiny"]
    cs = load_tickets(tmp_path / "zoo" / entry["candidate_set"])
    assert [t.keep_ratio for t in cs.tickets] == [0.3, 0.6]
    assert cs.spec.seed == plan.config().seed                                  # ONE random network
    assert set(entry["reports"]) == {"curve", "transfer", "r2s", "autoattack"}
    for rel in entry["reports"].values():
        payload = json.loads((tmp_path / "zoo" / rel).read_text())
        assert payload["provenance"]["versions"]["torch"]
    assert entry["dense"]["metrics"]["test_pgd20"]["value"] <= entry["dense"]["metrics"]["test_clean"]["value"]
    # transfer and R2S on the same images: one job, the paper protocol IS the transfer matrix
    assert any("transfer and r2s" in m for m in first), first
    transfer = json.loads((tmp_path / "zoo" / entry["reports"]["transfer"]).read_text())["without_early_stop"]
    r2s = json.loads((tmp_path / "zoo" / entry["reports"]["r2s"]).read_text())
    paper = next(r for r in r2s["results"] if r["protocol"] == "paper")
    assert paper["extra"]["transfer_matrix"] == transfer["matrix"]
    aa_path = tmp_path / "zoo" / entry["reports"]["autoattack"]
    aa = json.loads(aa_path.read_text())["rows"]
    assert [r["name"] for r in aa] == ["keep0.3", "keep0.6", "dense AT"]
    assert all(r["n_images"] == 8 and r["robust"] <= r["clean"] for r in aa)
    # a second build finds everything, recomputes nothing and leaves the shipped file as it is
    messages.clear()
    shipped_bytes = (tmp_path / "zoo" / entry["candidate_set"]).read_bytes()
    build_zoo(plan, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append)
    assert (tmp_path / "zoo" / entry["candidate_set"]).read_bytes() == shipped_bytes
    assert not any("searching" in m or "computing" in m or "adversarial training" in m or "AutoAttack" in m
                   for m in messages), messages
    # an AutoAttack report without the dense row and without its spans (older builds) gets that row only
    aa_path.write_text(json.dumps({"rows": aa[:2]}))
    shutil.rmtree(aa_path.parent / "autoattack-parts")
    messages.clear()
    build_zoo(plan, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append)
    assert [m.split(":")[0].strip() for m in messages if "AutoAttack" in m] == ["AutoAttack dense AT images 0-8"]
    assert [r["name"] for r in json.loads(aa_path.read_text())["rows"]] == ["keep0.3", "keep0.6", "dense AT"]
    # the curve reuses each ticket's test metrics (measured on the same images with the same attack)
    curve = json.loads((tmp_path / "zoo" / entry["reports"]["curve"]).read_text())["rows"]
    assert [r["robust"] for r in curve] == [t.metrics["test_pgd20"]["value"] for t in cs.tickets]
    # AutoAttack on the best ticket under PGD-20 only (and the dense baseline): another image count
    # makes the old rows stale, so exactly those two are computed
    best = max(curve, key=lambda r: r["robust"])["name"]
    messages.clear()
    one = ZooPlan(**{**plan.__dict__, "autoattack_images": 4, "autoattack_tickets": 1})
    build_zoo(one, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append)
    assert [r["name"] for r in json.loads(aa_path.read_text())["rows"]] == [best, "dense AT"]
    assert not any("searching" in m or "adversarial training" in m for m in messages), messages


def test_autoattack_runs_in_spans_that_a_killed_build_keeps(tmp_path, monkeypatch, short_autoattack):
    """AutoAttack goes span by span (rst.zoo.build.AUTOATTACK_CHUNK images a job), each span's result a file
    beside the reports; a build killed mid-way recomputes only the spans it lacks, and a network's row
    is its spans joined in image order."""
    import rst.zoo.autoattack_stage
    monkeypatch.setattr(rst.zoo.autoattack_stage, "AUTOATTACK_CHUNK", 3)
    plan = ZooPlan("tiny", keep_ratios=(0.3,), overrides=(("epochs", 1), ("val_images", 16)), eval_images=16,
                   transfer_images=8, r2s_images=8, r2s_protocols=("paper",), autoattack_images=8)
    root, messages = tmp_path / "zoo", []
    entry = build_zoo(plan, root=root, work=tmp_path / "work", progress=messages.append)
    aa_path = root / entry["reports"]["autoattack"]
    parts = aa_path.parent / "autoattack-parts"
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        f"{n}.{s}.json" for n in ("keep0.3", "dense_AT") for s in ("0-3", "3-6", "6-8"))
    rows = json.loads(aa_path.read_text())["rows"]
    assert [r["name"] for r in rows] == ["keep0.3", "dense AT"]
    for r in rows:
        bits = r["robust_per_image"]
        assert r["n_images"] == 8 and len(bits) == 8 and r["chunk_images"] == 3
        assert r["robust"] == pytest.approx(bits.count("1") / 8)
        spans = [json.loads((parts / f"{r['name'].replace(' ', '_')}.{s}.json").read_text()) for s in ("0-3", "3-6", "6-8")]
        assert bits == "".join(p["robust_per_image"] for p in spans)
        assert [p["images"] for p in spans] == [[0, 3], [3, 6], [6, 8]]
    # killed after two spans of the ticket, before any row was written: only the missing span runs
    aa_path.unlink()
    (parts / "keep0.3.3-6.json").unlink()
    messages.clear()
    build_zoo(plan, root=root, work=tmp_path / "work", progress=messages.append)
    ran = [m.split(":")[0].strip() for m in messages if m.strip().startswith("AutoAttack") and "robust" in m]
    assert ran == ["AutoAttack keep0.3 images 3-6"], messages
    assert json.loads(aa_path.read_text())["rows"] == rows          # the same images, the same seed: the same row
    # new tickets or another recipe: the spans go with the stale reports
    (aa_path.parent / "candidate_set.txt").write_text("another candidate set")
    build_zoo(ZooPlan(**{**plan.__dict__, "autoattack_images": 0}), root=root, work=tmp_path / "work")
    assert not parts.exists()


def test_recorded_build_command_parses_back_to_the_same_plan():
    import shlex

    from rst.cli.commands import build_parser, zoo_plan
    plans = [ZooPlan("fmnist-cpu", keep_ratios=(0.05, 0.1), zoo_id="fmnist-cpu-wide", overrides=(("width", 1.0),),
                     eval_images=2000, transfer_images=1000, r2s_images=500, autoattack_images=0, subset_images=300),
             ZooPlan("tiny"), ZooPlan("tiny", autoattack_images=1000, autoattack_tickets=2),
             ZooPlan("tiny", r2s_protocols=("paper", "expectation"))]
    for plan in plans:
        args = build_parser().parse_args(shlex.split(plan.command())[3:])   # drop "python -m rst"
        assert zoo_plan(args) == plan, plan.command()


def test_batched_zoo_build_searches_the_missing_tickets_together_and_reuses_them(tmp_path):
    plan = ZooPlan("tiny", keep_ratios=(0.2, 0.5), overrides=(("epochs", 1), ("val_images", 32)),
                   eval_images=32)
    messages = []
    entry = build_zoo(plan, root=tmp_path / "zoo", work=tmp_path / "work", progress=messages.append,
                      evaluate=False, dense=False, batched=True)
    assert sum("one batched pass" in m for m in messages) == 1
    cs = load_tickets(tmp_path / "zoo" / entry["candidate_set"])
    assert [t.keep_ratio for t in cs.tickets] == [0.2, 0.5]
    assert all(t.search_config["batched_with"] == [0.2, 0.5] for t in cs.tickets)
    assert all("test_pgd20" in t.metrics for t in cs.tickets)
    # the shipped tickets count as built with this recipe: a bigger plan searches only the new ratio
    messages.clear()
    bigger = ZooPlan("tiny", keep_ratios=(0.2, 0.5, 0.8), overrides=plan.overrides, eval_images=32)
    build_zoo(bigger, root=tmp_path / "zoo", work=tmp_path / "work2", progress=messages.append,
              evaluate=False, dense=False, batched=True)
    assert [m for m in messages if "searching" in m] == ["keep_ratio 0.8: searching (1 epochs)"]
    assert sum("reusing the shipped ticket" in m for m in messages) == 2


def recorded_plan(zoo: dict) -> ZooPlan:
    """The plan of a zoo's recorded build command (the index's ``built_with``), as the CLI parses it."""
    import shlex

    from rst.cli.commands import build_parser, zoo_plan
    return zoo_plan(build_parser().parse_args(shlex.split(zoo["built_with"])[3:]))   # drop "python -m rst"


BUILT = [z for z in INDEX["zoos"] if z.get("kind") != "boosted"]     # the zoos of `python -m rst zoo build`
BOOSTED = [z for z in INDEX["zoos"] if z.get("kind") == "boosted"]


@pytest.mark.parametrize("zoo", BUILT, ids=[z["id"] for z in BUILT])
def test_a_rebuild_recognises_every_shipped_ticket(zoo):
    """Adding a SearchConfig field must not make a rebuild search the shipped tickets again."""
    from rst.zoo.build import _same_recipe
    cs = load_tickets(REPO / "pretrained_masks" / zoo["candidate_set"], verify_weights=False)
    plan_cfg = recorded_plan(zoo).config
    for t in cs.tickets:
        assert _same_recipe(t.search_config, plan_cfg(keep_ratio=t.keep_ratio)), t.name
        assert not _same_recipe({**t.search_config, "epochs": 999}, plan_cfg(keep_ratio=t.keep_ratio))


REPORTED = [z for z in BUILT
            if (REPO / "pretrained_masks" / z["candidate_set"]).parent.joinpath("reports").is_dir()]


@pytest.mark.parametrize("zoo", REPORTED, ids=[z["id"] for z in REPORTED])
def test_a_rebuild_keeps_every_shipped_report(zoo):
    """A rebuild with the recorded command finds the shipped reports current: their stamp is the one
    the build writes for these tickets and this recipe (a stale stamp makes it delete and redo them)."""
    from rst.zoo.build import _report_stamp
    cs = load_tickets(REPO / "pretrained_masks" / zoo["candidate_set"], verify_weights=False)
    folder = (REPO / "pretrained_masks" / zoo["candidate_set"]).parent / "reports"
    assert (folder / "candidate_set.txt").read_text() == _report_stamp(cs, recorded_plan(zoo).config()), zoo["id"]


def test_update_index_replaces_an_entry_where_it_stands(tmp_path):
    from rst.zoo.build import update_index
    for zid in ("a", "b", "c"):
        update_index(tmp_path, {"id": zid, "v": 1})
    update_index(tmp_path, {"id": "a", "v": 2})
    zoos = read_index(tmp_path)["zoos"]
    assert [(z["id"], z["v"]) for z in zoos] == [("a", 2), ("b", 1), ("c", 1)]


def test_update_index_replaces_in_place_appends_and_can_list_a_zoo_first(tmp_path):
    from rst.zoo.build import update_index
    for zid in ("a", "b"):
        update_index(tmp_path, {"id": zid, "v": 1})
    update_index(tmp_path, {"id": "a", "v": 2})                       # in place: stays first
    assert [(z["id"], z["v"]) for z in read_index(tmp_path)["zoos"]] == [("a", 2), ("b", 1)]
    update_index(tmp_path, {"id": "c", "v": 1}, first=True)           # the app opens on the first
    assert [z["id"] for z in read_index(tmp_path)["zoos"]] == ["c", "a", "b"]
    update_index(tmp_path, {"id": "b", "v": 3}, first=True)
    assert [(z["id"], z["v"]) for z in read_index(tmp_path)["zoos"]] == [("b", 3), ("c", 1), ("a", 2)]


def test_a_rebuild_with_another_recipe_redoes_the_dense_baseline_and_the_reports_and_refuses_stale_work(tmp_path):
    """Rebuilding a zoo over its shipped folder with new settings must not keep the old dense baseline
    or the old reports (they would sit beside tickets of another recipe), and a work folder holding
    tickets of another recipe is refused, not silently reused."""
    from rst.runtime.checkpoint import ResumeMismatchError
    plan = ZooPlan("tiny", keep_ratios=(0.3,), overrides=(("epochs", 1), ("val_images", 32)),
                   eval_images=16, transfer_images=16, r2s_images=16, autoattack_images=0)
    root = tmp_path / "zoo"
    build_zoo(plan, root=root, work=tmp_path / "work1")
    stamp = (root / "tiny" / "reports" / "candidate_set.txt").read_text()
    other = ZooPlan(**{**plan.__dict__, "overrides": plan.overrides + (("lr", 0.05),)})
    messages = []
    entry = build_zoo(other, root=root, work=tmp_path / "work2", progress=messages.append)
    assert any("trained with another recipe; training it again" in m for m in messages), messages
    assert not any("reusing the shipped ticket" in m for m in messages), messages
    assert any("report transfer: computing" in m for m in messages), messages
    assert load_weights(root / entry["dense_baseline"])[1]["config"]["lr"] == 0.05
    assert load_tickets(root / entry["candidate_set"]).tickets[0].search_config["lr"] == 0.05
    assert (root / "tiny" / "reports" / "candidate_set.txt").read_text() != stamp
    third = ZooPlan(**{**plan.__dict__, "overrides": plan.overrides + (("lr", 0.02),)})
    with pytest.raises(ResumeMismatchError, match="another recipe"):
        build_zoo(third, root=root, work=tmp_path / "work1")          # work1 holds lr-0.1 tickets


@pytest.mark.parametrize("zoo", BOOSTED, ids=[z["id"] for z in BOOSTED])
def test_a_boosted_set_records_its_command_alpha_and_first_member(zoo):
    """The index's command is the recipe of the boosted members, alpha is the file's, and member 0 is the
    base zoo's ticket named in --boost-first, mask for mask."""
    import shlex

    from rst.cli.commands import build_parser
    from rst.cli.run_options import config_from_args
    args = build_parser().parse_args(shlex.split(zoo["built_with"])[3:])
    cs = load_tickets(REPO / "pretrained_masks" / zoo["candidate_set"], verify_weights=False)
    assert args.boosted == len(cs) and cs.probabilities == zoo["switch_probabilities"]
    assert abs(sum(cs.probabilities) - 1) < 1e-6
    cfg = config_from_args(args).to_dict()
    for t in cs.tickets[1:]:
        recorded = {k: v for k, v in t.search_config.items()
                    if k not in ("boost_members", "inner_attack", "best_epoch", "speed")}   # the run's, not the recipe's
        assert recorded == {k: v for k, v in cfg.items() if k in recorded}, t.name
        assert t.search_config["inner_attack"] == "boosted"
    path, name = args.boost_first.rsplit(":", 1)
    first = next(t for t in load_tickets(REPO / path, verify_weights=False).tickets if t.name == name)
    assert all(torch.equal(first.masks[k], cs.tickets[0].masks[k]) for k in first.masks)

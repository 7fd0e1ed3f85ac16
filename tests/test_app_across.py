"""The Sparsity page's "across networks" view under AppTest: three sibling zoos (one recipe, seeds
0, 1, 2) in the index give a mean curve with error bars = std over networks, and the tables."""
from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

MAIN = str(Path(__file__).resolve().parent.parent / "app" / "main.py")


@pytest.fixture(scope="module")
def sibling_zoo(tmp_path_factory):
    import torch
    from tiny_zoo import build_tiny_zoo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        built = build_tiny_zoo(tmp_path_factory.mktemp("zoo"), with_reports=False)
    finally:
        torch.set_num_threads(threads)
    index_path = Path(built["zoo_dir"]) / "index.json"
    index = json.loads(index_path.read_text())
    base = index["zoos"][0]
    base["seed"] = 0
    for seed, shift in ((1, 0.02), (2, -0.02)):      # the same recipe, other draws: shifted PGD-20 figures
        sib = copy.deepcopy(base)
        sib["id"], sib["seed"] = f"tiny-seed{seed}", seed
        for t in sib["tickets"]:
            t["metrics"]["test_pgd20"]["value"] += shift
        index["zoos"].append(sib)
    index_path.write_text(json.dumps(index))
    return built | {"index": index}


def test_across_networks_shows_the_mean_and_the_spread(sibling_zoo, monkeypatch):
    monkeypatch.setenv("RST_ZOO_DIR", str(sibling_zoo["zoo_dir"]))
    monkeypatch.setenv("RST_TEST_SUBSET", str(sibling_zoo["subset"]))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/sparsity.py").run()
    assert any("across random networks" in o for o in at.radio(key="sparsity_source").options)
    at.radio(key="sparsity_source").set_value("across").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "3 random networks" in "\n".join(c.value for c in at.caption)
    fig = json.loads(at.get("plotly_chart")[0].proto.spec)
    means = [t for t in fig["data"] if "mean ± std" in t.get("name", "")]
    assert {t["name"].split(":")[0] for t in means} == {"PGD-20", "clean"}
    robust = next(t for t in means if t["name"].startswith("PGD-20"))
    base = sibling_zoo["index"]["zoos"][0]["tickets"]
    assert robust["y"] == pytest.approx([100 * t["metrics"]["test_pgd20"]["value"] for t in base])   # shifts cancel
    assert robust["error_y"]["array"] == pytest.approx([2.0] * len(base))   # std of (+2, 0, -2) points
    table = at.dataframe[0].value
    assert list(table["networks"]) == [3] * len(table)
    assert table["PGD-20 % (mean ± std)"].str.contains("±").all()


def test_across_networks_with_one_network_says_so(sibling_zoo, tmp_path, monkeypatch):
    zoo = tmp_path / "pretrained_masks"
    shutil.copytree(sibling_zoo["zoo_dir"], zoo)
    index = json.loads((zoo / "index.json").read_text())
    index["zoos"] = index["zoos"][:1]
    (zoo / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("RST_ZOO_DIR", str(zoo))
    monkeypatch.setenv("RST_TEST_SUBSET", str(sibling_zoo["subset"]))
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/sparsity.py").run()
    at.radio(key="sparsity_source").set_value("across").run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Only one random network" in "\n".join(i.value for i in at.info)

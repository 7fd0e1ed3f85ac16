"""The Streamlit app under ``AppTest``: every page renders, and one interaction per page works.

A session fixture builds a tiny zoo (three 1-epoch tickets of a quarter-width Conv-4 on synthetic
data, a 256-image stand-in test subset, stored reports) and points ``RST_ZOO_DIR`` /
``RST_TEST_SUBSET`` at it; ``empty_env`` points them at nothing (no zoo, no subset).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app"
MAIN = str(APP / "main.py")
PAGES = ["views/home.py", "views/network.py", "views/search.py", "views/sparsity.py", "views/transfer.py",
         "views/r2s_live.py", "views/masks.py"]
TIMEOUT = 120


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory):
    import torch
    from tiny_zoo import build_tiny_zoo
    threads = torch.get_num_threads()
    torch.set_num_threads(1)          # tiny tensors: one thread is faster, and robust on a busy machine
    try:
        return build_tiny_zoo(tmp_path_factory.mktemp("zoo"))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture
def zoo_env(tiny_zoo, monkeypatch):
    monkeypatch.setenv("RST_ZOO_DIR", str(tiny_zoo["zoo_dir"]))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tiny_zoo["subset"]))
    return tiny_zoo


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RST_ZOO_DIR", str(tmp_path / "no_zoo"))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tmp_path / "no_subset.safetensors"))
    monkeypatch.setenv("RST_TRAIN_SUBSET", str(tmp_path / "no_train_subset.safetensors"))


def _app(page: str | None = None) -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    if page is not None and page != PAGES[0]:
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _finish(at: AppTest, timeout: float = TIMEOUT) -> AppTest:
    """Wait for the session's live job (the pages compute in the background) and rerun the page."""
    job = at.session_state["live_job"] if "live_job" in at.session_state else None
    if job is not None:
        assert job.join(timeout), "the live job did not end"
        assert job.error is None, job.error
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ------------------------------------------------------------------------------------------ defaults


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_the_zoo(zoo_env, page):
    at = _app(page)
    assert at.title, "every page has a title"
    assert not at.error, _texts(at.error)
    assert at.session_state["active_key"] == "zoo:tiny"


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_without_zoo_and_guides(empty_env, page):
    at = _app(page)
    guidance = _texts(at.info) + _texts(at.markdown)
    if page in ("views/home.py", "views/sparsity.py", "views/transfer.py", "views/r2s_live.py", "views/masks.py"):
        assert "python -m rst zoo build fmnist" in guidance
        assert "Masks" in guidance and "Search" in guidance
    assert not at.error, _texts(at.error)


@pytest.fixture
def broken_env(tiny_zoo, tmp_path, monkeypatch):
    """A zoo whose index names a missing mask file, and a subset file that is not one."""
    import json
    zoo = tmp_path / "zoo"
    zoo.mkdir()
    index = json.loads((Path(tiny_zoo["zoo_dir"]) / "index.json").read_text())
    index["zoos"][0]["candidate_set"] = "tiny/missing.rst.safetensors"
    (zoo / "index.json").write_text(json.dumps(index))
    (tmp_path / "subset.safetensors").write_bytes(b"not safetensors")
    monkeypatch.setenv("RST_ZOO_DIR", str(zoo))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tmp_path / "subset.safetensors"))


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_with_broken_files_and_says_why(broken_env, page):
    at = _app(page)
    if page not in ("views/search.py", "views/network.py"):
        assert "does not exist" in _texts(at.error)


def test_corrupt_index_is_reported(tmp_path, monkeypatch):
    (tmp_path / "index.json").write_text("{not json")
    monkeypatch.setenv("RST_ZOO_DIR", str(tmp_path))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tmp_path / "none.safetensors"))
    at = _app()
    assert "cannot be read" in _texts(at.error)


def test_home_says_what_is_loaded_and_warns_about_adaptive_attacks(zoo_env):
    at = _app()
    assert _metric(at, "Tickets") == "3"
    assert "adaptive" in _texts(at.warning).lower()


# ------------------------------------------------------------------------------------------ pages


def test_network_page_shows_kept_weights_and_reacts_to_the_seed(zoo_env):
    at = _app("views/network.py")
    table = at.dataframe[0].value
    assert [c for c in table.columns if c.startswith("kept · ")] == ["kept · keep0.3", "kept · keep0.5", "kept · keep0.7"]
    checksum = _texts(at.caption)
    at.number_input(key="nw_seed").set_value(1)
    at.button(key="nw_show").click().run()
    assert not at.exception
    assert _texts(at.caption) != checksum                     # another seed: another checksum
    assert not any(c.startswith("kept · ") for c in at.dataframe[0].value.columns)


def test_sparsity_slider_moves_the_highlight_and_the_density_chart(zoo_env):
    at = _app("views/sparsity.py")
    assert _metric(at, "Keep ratio") == "0.3"
    density_before = _plotly(at, "sparsity_density")
    at.select_slider(key="sparsity_slider").set_value(2).run()
    assert not at.exception
    assert _metric(at, "Keep ratio") == "0.7"
    density_after = _plotly(at, "sparsity_density")
    assert density_before != density_after
    assert "keep0.7" in density_after
    assert "Dashed: the dense network" in _texts(at.caption)       # the zoo's dense baseline as lines
    assert "dense AT, robust" in _plotly(at, "sparsity_curve")


def _zoo_with_autoattack_report(tiny_zoo, tmp_path, monkeypatch, attacks: list[str]) -> dict:
    """A copy of the tiny zoo whose index lists an AutoAttack report (tickets 25 %, dense AT 37.5 %), in use;
    returns its index."""
    import json
    import shutil
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo["zoo_dir"], zoo)
    index = json.loads((zoo / "index.json").read_text())
    rows = [{"name": t["name"], "keep_ratio": t["keep_ratio"], "clean": 0.5, "robust": 0.25, "version": "standard",
             "attacks": attacks, "n_images": 32, "eps": 0.1} for t in index["zoos"][0]["tickets"]]
    rows.append({**rows[0], "name": "dense AT", "keep_ratio": 1.0, "robust": 0.375})
    (zoo / "tiny" / "autoattack.json").write_text(json.dumps({"rows": rows}))
    index["zoos"][0]["reports"]["autoattack"] = "tiny/autoattack.json"
    (zoo / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("RST_ZOO_DIR", str(zoo))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tiny_zoo["subset"]))
    return index


def test_sparsity_shows_a_stored_autoattack_report(tiny_zoo, tmp_path, monkeypatch):
    _zoo_with_autoattack_report(tiny_zoo, tmp_path, monkeypatch, ["apgd-ce", "apgd-t", "fab-t", "square"])
    at = _app("views/sparsity.py")
    figure = _plotly(at, "sparsity_curve")
    assert "robust (AutoAttack)" in figure
    assert "dense AT, AutoAttack" in figure and "37.5" in figure
    assert "Dotted: AutoAttack standard" in _texts(at.caption)


def test_sparsity_live_computation(zoo_env):
    at = _app("views/sparsity.py")
    at.radio(key="sparsity_source").set_value("live").run()
    at.number_input(key="sp_images").set_value(16)
    at.number_input(key="sp_steps").set_value(2)
    at.button(key="sp_compute").click().run()
    _finish(at)
    assert not at.exception, [e.value for e in at.exception]
    assert "Numbers: computed live" in _texts(at.caption)
    assert len(at.dataframe[0].value) == 3


def test_transfer_stored_toggle_and_live(zoo_env):
    at = _app("views/transfer.py")
    assert _metric(at, "Early stop") == "off"
    at.toggle(key="transfer_stored_early_stop").set_value(True).run()
    assert _metric(at, "Early stop") == "on (inflated)"
    at.radio(key="transfer_source").set_value("live").run()
    at.number_input(key="tr_images").set_value(16)
    at.number_input(key="tr_steps").set_value(2)
    at.button(key="tr_compute").click().run()
    _finish(at)
    assert not at.exception, [e.value for e in at.exception]
    assert "WITHOUT early stop" in _plotly(at, "transfer_heatmap")


def test_r2s_live_small_attack_gallery_and_attributions(zoo_env):
    at = _app("views/r2s_live.py")
    at.selectbox(key="r2s_attack").set_value("protocol:expectation")
    at.number_input(key="r2s_images").set_value(16)
    at.number_input(key="r2s_steps").set_value(2)
    at.button(key="r2s_run").click().run()
    _finish(at)
    assert not at.exception, [e.value for e in at.exception]
    table = _dataframe(at, "clean")
    assert list(table["what"][:3]) == ["R2S · expectation", "R2S · paper", "R2S · clean"]
    assert sum(table["what"].str.endswith("alone")) == 3
    assert (table["expected"] <= 100).all()
    assert len(at.get("image")) >= 2                           # gallery: clean and adversarial rows
    at.radio(key="cap_method").set_value("Saliency")
    at.button(key="cap_explain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "Saliency" in _plotly(at, "captum_maps")


def test_r2s_live_transfer_from_one_member(zoo_env):
    at = _app("views/r2s_live.py")
    at.selectbox(key="r2s_attack").set_value("member")
    at.selectbox(key="r2s_source").set_value(1)
    at.number_input(key="r2s_images").set_value(16)
    at.number_input(key="r2s_steps").set_value(2)
    at.button(key="r2s_run").click().run()
    _finish(at)
    assert not at.exception, [e.value for e in at.exception]
    assert _dataframe(at, "clean")["what"][0] == "R2S · transfer from keep0.5"


def test_masks_bad_upload_shows_an_error_and_keeps_the_session(zoo_env):
    at = _app("views/masks.py")
    before = (at.session_state["active_key"], dict(at.session_state["session_sets"]))
    at.file_uploader(key="mask_upload").upload("evil.rst.safetensors", b"\x80\x04not a mask file at all")
    at.run()
    assert not at.exception
    assert "evil.rst.safetensors" in _texts(at.error) and "cannot be used" in _texts(at.error)
    assert (at.session_state["active_key"], dict(at.session_state["session_sets"])) == before
    assert len(at.get("download_button")) == 4                # set + 3 tickets still downloadable


def test_masks_good_upload_becomes_the_active_set(zoo_env):
    data = (Path(zoo_env["zoo_dir"]) / "tiny" / "tickets.rst.safetensors").read_bytes()
    at = _app("views/masks.py")
    at.file_uploader(key="mask_upload").upload("mine.rst.safetensors", data).run()
    assert not at.exception and not at.error
    assert "weights checksum verified" in _texts(at.success)
    at.button(key="use_upload").click().run()
    assert not at.exception
    assert at.session_state["active_key"].startswith("upload:")
    assert "upload · mine.rst.safetensors" in at.sidebar.selectbox[0].options


def test_search_one_epoch_then_add_the_ticket(zoo_env):
    at = _app("views/search.py")
    at.number_input(key="se_epochs").set_value(1)
    at.number_input(key="se_train").set_value(64)
    at.number_input(key="se_keep").set_value(0.4)
    at.button(key="se_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["search_job"]
    assert job.join(timeout=90), "the 1-epoch tiny search did not finish in 90 s"
    at.run()
    assert not at.exception and job.error is None, job.error_trace
    assert "keep0.4" in _texts(at.success)
    at.button(key="add_ticket").click().run()
    assert not at.exception
    active = at.session_state["active_key"]
    assert active.startswith("search:")
    cs = at.session_state["session_sets"][active]["cs"]
    assert [t.keep_ratio for t in cs.tickets] == [0.3, 0.5, 0.7, 0.4]


def test_search_stop_button_stops_the_search(zoo_env):
    at = _app("views/search.py")
    at.number_input(key="se_epochs").set_value(200)
    at.number_input(key="se_train").set_value(64)
    at.button(key="se_start").click().run()
    job = at.session_state["search_job"]
    assert job.running
    at.button(key="stop_search").click().run()
    assert job.stop_requested
    assert job.join(timeout=60), "the search did not stop"
    at.run()
    assert not at.exception and job.error is None, job.error_trace
    assert job.result.stopped and len(job.result.history) < 200
    assert "stopped early" in _texts(at.success)


# ------------------------------------------------------------------------------------------ helpers


def _dataframe(at: AppTest, column: str):
    """The first table with ``column`` (st.dataframe has no id unless selections are on)."""
    return next(d.value for d in at.dataframe if column in d.value.columns)


def _plotly(at: AppTest, key: str) -> str:
    """The JSON spec of the Plotly chart with ``key``."""
    for el in at.get("plotly_chart"):
        if el.key == key:
            return el.proto.spec
    raise AssertionError(f"no plotly chart with key {key!r}")


def test_without_a_zoo_a_searched_ticket_is_usable_everywhere(empty_env):
    at = _app("views/search.py")
    assert at.radio(key="se_data").value == "synthetic"           # no subset: the synthetic demo data
    at.number_input(key="se_epochs").set_value(1)
    at.number_input(key="se_train").set_value(64)
    at.button(key="se_start").click().run()
    job = at.session_state["search_job"]
    assert job.join(timeout=90)
    at.run()
    assert job.error is None, job.error_trace
    at.button(key="new_set").click().run()
    assert at.session_state["active_key"].startswith("search:")
    at.switch_page("views/sparsity.py").run()
    assert "validation" in at.radio(key="sparsity_source").options[0]    # the ticket's recorded metrics
    at.radio(key="sparsity_source").set_value("live").run()
    at.number_input(key="sp_images").set_value(16)
    at.number_input(key="sp_steps").set_value(1)
    at.button(key="sp_compute").click().run()
    _finish(at)
    assert not at.exception, [e.value for e in at.exception]
    assert _metric(at, "Keep ratio") == "0.5"
    at.switch_page("views/masks.py").run()
    assert len(at.get("download_button")) == 2                # the set and its one ticket


# ------------------------------------------------------------------------------------------ page fixes (issue 15)


def _figure(at: AppTest, key: str) -> dict:
    import json
    return json.loads(_plotly(at, key))


def test_network_page_describes_this_width_and_charts_layers_in_keep_ratio_order(zoo_env):
    at = _app("views/network.py")
    table = at.dataframe[0].value
    assert not any(name.startswith("1.") for name in table["layer"]), "the normaliser's '1.' prefix is gone"
    caption = _texts(at.caption)
    total = int(table["weights"].sum())
    assert f"{total:,} weights" in caption and "at width ×0.25" in caption
    assert "32-32-64-64" not in caption and "0.40 M" not in caption       # the registry's width-1 text
    fig = _figure(at, "network_bars")
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert fig["layout"]["xaxis"]["title"]["text"]
    names = [tr["name"] for tr in fig["data"]]
    assert names == ["all weights", "keep 0.3", "keep 0.5", "keep 0.7"]
    colors = [tr["marker"]["color"] for tr in fig["data"][1:]]
    assert len(set(colors)) == 3                                           # one colour per keep ratio


def test_search_names_the_new_ticket_uniquely_and_counts_epochs_from_one(zoo_env):
    at = _app("views/search.py")
    at.number_input(key="se_epochs").set_value(1)
    at.number_input(key="se_train").set_value(64)
    at.number_input(key="se_keep").set_value(0.5)                         # the zoo set already has keep0.5
    at.button(key="se_start").click().run()
    job = at.session_state["search_job"]
    assert job.join(timeout=90)
    at.run()
    assert job.error is None, job.error_trace
    history = _dataframe(at, "epoch")
    assert list(history["epoch"]) == [1]
    assert "robust, validation" in history.columns
    shown = _metric(at, "Robust accuracy (validation)")                   # percent ± SE, as the metric above it
    assert shown == history["robust, validation"].iloc[0] and " % ± " in shown
    at.button(key="add_ticket").click().run()
    cs = at.session_state["session_sets"][at.session_state["active_key"]]["cs"]
    names = [t.name for t in cs.tickets]
    assert names == ["keep0.3", "keep0.5", "keep0.7", "keep0.5-2"] and len(set(names)) == len(names)
    assert job.result.ticket.name == "keep0.5"                             # the search's own result is unchanged
    fig = _figure(at, "search_curves")
    assert fig["layout"]["xaxis"]["range"] == fig["layout"]["xaxis2"]["range"]   # one x convention


def test_search_message_says_when_the_best_epoch_is_incomplete():
    from types import SimpleNamespace
    sys.path.insert(0, str(APP))
    from jobs import result_summary
    history = [{"epoch": 0, "complete": True}, {"epoch": 1, "complete": True}, {"epoch": 2, "complete": False}]
    res = SimpleNamespace(ticket=SimpleNamespace(name="keep0.5"), history=history, best_epoch=2, stopped=True)
    text = result_summary(res)
    assert "best epoch 3 of 3 run (2 complete)" in text and "stopped part-way" in text
    res = SimpleNamespace(ticket=SimpleNamespace(name="keep0.5"), history=history[:2], best_epoch=1, stopped=False)
    assert result_summary(res) == "Ticket **keep0.5** found: best epoch 2 of 2 run."


def test_sparsity_dense_levels_are_legend_entries_with_error_bars(tiny_zoo, tmp_path, monkeypatch):
    index = _zoo_with_autoattack_report(tiny_zoo, tmp_path, monkeypatch, ["apgd-ce"])
    at = _app("views/sparsity.py")
    fig = _figure(at, "sparsity_curve")
    assert not fig["layout"].get("annotations"), "no text labels in the plot to collide with lines"
    dense = {tr["name"]: tr for tr in fig["data"] if tr.get("name", "").startswith("dense AT")}
    assert set(dense) == {"dense AT, robust (64 images)", "dense AT, AutoAttack (32 images)", "dense AT, natural (64 images)"}
    aa, pgd = dense["dense AT, AutoAttack (32 images)"], dense["dense AT, robust (64 images)"]
    se = lambda p, n: 100 * (p * (1 - p) / n) ** 0.5                    # noqa: E731
    assert abs(aa["error_y"]["array"][0] - se(0.375, 32)) < 1e-6
    p = index["zoos"][0]["dense"]["metrics"]["test_pgd20"]["value"]
    assert abs(pgd["error_y"]["array"][0] - se(p, 64)) < 1e-6 and pgd["x"] == [1.0]
    with_bars = [tr for tr in fig["data"] if tr.get("name") == "robust (AutoAttack)"][0]
    assert with_bars["error_y"]["visible"]
    table = at.dataframe[0].value
    assert {"natural (%)", "robust (%)"} <= set(table.columns)


def test_sparsity_uniform_density_shows_kept_counts(zoo_env):
    at = _app("views/sparsity.py")
    fig = _figure(at, "sparsity_density")
    assert fig["layout"]["title"]["text"].startswith("Kept weights per layer")   # per-layer masks: all alike
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert "Every layer keeps" in _texts(at.caption)


def test_transfer_colours_span_the_data_and_the_paper_matrix_is_categorical(zoo_env):
    import numpy as np
    at = _app("views/transfer.py")
    fig = _figure(at, "transfer_heatmap")
    z = np.asarray(fig["data"][0]["z"], dtype=float)
    assert fig["data"][0]["zmin"] == z.min() and fig["data"][0]["zmax"] == z.max()
    assert fig["data"][0]["texttemplate"] == "%{text}"
    paper = _figure(at, "paper_heatmap")
    assert paper["layout"]["xaxis"]["type"] == paper["layout"]["yaxis"]["type"] == "category"


def test_r2s_attributions_in_keep_ratio_order_and_attacks_in_full(zoo_env):
    at = _app("views/r2s_live.py")
    at.number_input(key="r2s_images").set_value(16)
    at.number_input(key="r2s_steps").set_value(2)
    at.button(key="r2s_run").click().run()
    _finish(at)
    columns = _dataframe(at, "clean").columns
    assert "attack" not in columns and "threat model" not in columns       # the long texts: below, in full
    assert "PGD-2 Linf" in _texts(at.markdown) and "adaptive white-box" in _texts(at.markdown)
    at.radio(key="cap_method").set_value("Saliency")
    at.button(key="cap_explain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    fig = _figure(at, "captum_maps")
    titles = [a["text"].split("<br>")[0] for a in fig["layout"]["annotations"]]
    assert titles == ["keep0.3", "keep0.5", "keep0.7"]


def test_masks_caption_after_use_says_it_is_active(zoo_env):
    data = (Path(zoo_env["zoo_dir"]) / "tiny" / "tickets.rst.safetensors").read_bytes()
    at = _app("views/masks.py")
    at.file_uploader(key="mask_upload").upload("mine.rst.safetensors", data).run()
    at.button(key="use_upload").click().run()
    captions = _texts(at.caption)
    assert "is the active candidate set now" in captions and "choose it in the sidebar" not in captions


def test_the_page_icon_is_a_shipped_file():
    main = (APP / "explorer.py").read_text()
    assert "favicon.png" in main and ":material/" not in main.split("set_page_config")[1].split("\n")[0]
    assert (APP.parent / "assets" / "favicon.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_r2s_live_shows_the_like_with_like_report_and_the_paired_difference(tiny_zoo, tmp_path, monkeypatch):
    """The stored `eval r2s --protocols all` report: worst case per model over its suite, and R2S minus
    the best single ticket with its paired interval; ARC is one of the page's attacks."""
    import json
    import shutil

    import torch
    from rst.evaluation.compare import SuiteConfig, compare_like_with_like
    from rst.data.datasets import load_subset
    from rst.network.masks import load_tickets
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo["zoo_dir"], zoo)
    monkeypatch.setenv("RST_ZOO_DIR", str(zoo))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tiny_zoo["subset"]))
    cs = load_tickets(zoo / "tiny" / "tickets.rst.safetensors")
    x, y, _ = load_subset(tiny_zoo["subset"])
    cfg = SuiteConfig(steps=2, long_steps=2, long_restarts=2, apgd_steps=2, arc_steps=1, eot_samples=1,
                      apgd_t_targets=1)
    torch.set_num_threads(1)
    rep = compare_like_with_like(cs, x, y, eps=0.1, r2s_images=12, single_images=16, cfg=cfg)
    (zoo / "tiny" / "r2s_compare.json").write_text(json.dumps({"compare": rep.to_dict()}))
    best = rep.paired["best_member"]

    at = _app("views/r2s_live.py")
    assert _metric(at, "R2S − best single ticket (paired, 95 %)") == (
        f"{100 * best['difference']:+.1f} [{100 * best['ci_low']:+.1f}, {100 * best['ci_high']:+.1f}]")
    se = 100 * (rep.rows[0].worst_case * (1 - rep.rows[0].worst_case) / best["n_images"]) ** 0.5
    assert _metric(at, "R2S, worst case over its suite") == f"{100 * rep.rows[0].worst_case:.1f} % ± {se:.1f}"
    text = _texts(at.markdown)
    assert "significant" in text and f"over {best['n_images']} paired images" in text
    frame = next(d.value for d in at.dataframe if "worst_case" in d.value.columns)
    assert list(frame["model"]) == [r.name for r in rep.rows] and "arc" in frame["suite"].iloc[0].lower()
    assert any(o.startswith("ARC") for o in at.selectbox(key="r2s_attack").options)


# ------------------------------------------------------------------------------------------ entry, first page, ± and training data (issue 32)


def test_streamlit_run_app_serves(tmp_path):
    """``streamlit run app`` (the folder entry, as ``make app`` and the browser test start it) serves:
    healthy, the page is fetched, and the script's first run has no error in the server log."""
    import os
    import urllib.request

    from browser import free_port, start_server, stop_server, wait_healthy
    assert "streamlit run app " in (APP.parent / "Makefile").read_text()
    port, log = free_port(), tmp_path / "server.log"
    proc = start_server(port, {**os.environ, "RST_ZOO_DIR": str(tmp_path / "no_zoo")}, log)
    try:
        wait_healthy(port, proc)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200 and b'<div id="root">' in r.read()
    finally:
        stop_server(proc)
    assert "does not exist" not in log.read_text() and "Error" not in log.read_text()


def test_main_py_runs_the_same_app():
    at = AppTest.from_file(str(APP / "explorer.py"), default_timeout=TIMEOUT).run()
    assert not at.exception and at.title[0].value == "RST Explorer"


@pytest.fixture
def shipped_data_env(tmp_path, monkeypatch):
    """No zoo, the shipped training and test subsets (assets/)."""
    monkeypatch.setenv("RST_ZOO_DIR", str(tmp_path / "no_zoo"))
    monkeypatch.delenv("RST_TEST_SUBSET", raising=False)
    monkeypatch.delenv("RST_TRAIN_SUBSET", raising=False)


def _search(at: AppTest, source: str | None = None) -> AppTest:
    """A 1-epoch, 64-image search with the page's other defaults; the page after it ended."""
    if source is not None:
        at.radio(key="se_data").set_value(source).run()
    at.number_input(key="se_epochs").set_value(1)
    at.number_input(key="se_train").set_value(64)
    at.button(key="se_start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    job = at.session_state["search_job"]
    assert job.join(timeout=90), "the 1-epoch search did not finish in 90 s"
    at.run()
    assert job.error is None, job.error_trace
    return at


def test_default_live_search_trains_on_the_training_subset_and_its_ticket_says_so(shipped_data_env):
    at = _app("views/search.py")
    assert at.radio(key="se_data").value == "train_subset" and not at.warning
    _search(at)
    job = at.session_state["search_job"]
    assert "training subset" in job.data_label and "train[:6000]" in job.data_label
    assert len(job.data.y_val) == 128 and len(job.data.y_train) == 64
    assert _metric(at, "Searched on") == "training images"
    at.button(key="new_set").click().run()
    ticket = at.session_state["session_sets"][at.session_state["active_key"]]["cs"].tickets[0]
    assert ticket.search_config["data"] == {"source": "train_subset", "split": "train", "train_images": 64,
                                            "val_images": 128}
    assert ticket.metrics["val_robust"]["split"] == "validation"
    assert "TEST" not in _texts(at.sidebar.warning)


def test_a_search_on_test_images_is_behind_a_warning_and_marked_on_every_page(shipped_data_env):
    from rst.network.masks import load_tickets
    at = _app("views/search.py")
    at.radio(key="se_data").set_value("subset").run()
    assert "Test images" in _texts(at.warning)                       # visible before anything starts
    _search(at)
    assert _metric(at, "Searched on") == "TEST images"
    at.button(key="new_set").click().run()
    cs = at.session_state["session_sets"][at.session_state["active_key"]]["cs"]
    assert cs.tickets[0].search_config["data"]["split"] == "test"
    assert cs.tickets[0].metrics["val_robust"]["split"] == "validation (test images)"
    for page in PAGES:
        at.switch_page(page).run()
        assert not at.exception, [e.value for e in at.exception]
        assert "searched on TEST images" in _texts(at.sidebar.warning), page
    import state as app_state                                        # the downloaded file carries the mark
    raw = app_state.set_bytes("check", cs)
    assert load_tickets(raw).tickets[0].search_config["data"]["split"] == "test"


def test_search_refuses_a_second_start_and_bad_values_in_one_line(zoo_env):
    first = _app("views/search.py")
    first.number_input(key="se_epochs").set_value(200)
    first.number_input(key="se_train").set_value(64)
    first.button(key="se_start").click().run()
    job = first.session_state["search_job"]
    try:
        assert job.running
        first.button(key="se_start").click().run()                     # a second start while it runs
        assert first.session_state["search_job"] is job and not first.exception
        warnings = [w.value for w in first.warning if "already running" in w.value]
        assert len(warnings) == 1 and "\n" not in warnings[0]
    finally:
        job.stop()
        assert job.join(timeout=60)
    first.run()
    first.radio(key="se_data").set_value("train_subset").run()       # more training images than it ships
    first.number_input(key="se_train").set_value(6000)
    first.button(key="se_start").click().run()
    errors = [e.value for e in first.error if "Cannot start" in e.value]
    assert first.session_state["search_job"] is job, "a refused search replaced the session's job"
    assert len(errors) == 1 and "\n" not in errors[0] and "1 to 5872 can train, not 6000" in errors[0], errors


FIRST_RUN = """
import sys
from streamlit.testing.v1 import AppTest
at = AppTest.from_file(sys.argv[1], default_timeout=120).run()
assert not at.exception, [e.value for e in at.exception]
print("metric", [m.value for m in at.metric])
print("sidebar", [c.value for c in at.sidebar.caption])
print("device", [m.value for m in at.markdown if "Device" in m.value])
"""


def test_the_first_home_page_of_a_process_renders_without_torch(zoo_env):
    """Home describes the zoo's set from its index, and the sidebar says the device is being detected:
    what the first page renders needs neither torch nor rst (they load after it)."""
    import subprocess
    out = subprocess.run([sys.executable, "-c", FIRST_RUN, MAIN], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import json
    n = len(json.loads((zoo_env["zoo_dir"] / "index.json").read_text())["zoos"][0]["tickets"])
    assert f"metric ['{n}']" in out.stdout, out.stdout          # the Tickets count, from the index
    assert "Device: detecting" in out.stdout and "detected after this page" in out.stdout, out.stdout


def test_masks_page_shows_each_recorded_accuracy_with_its_standard_error(zoo_env):
    at = _app("views/masks.py")
    table = _dataframe(at, "robust")
    assert len(table) and all(" % ± " in v for v in table["robust"]) and all(" % ± " in v for v in table["clean"])


# ------------------------------------------------------------------------------------------ live jobs: R2S, Sparsity, Transfer (background, Stop, sessions, ±)


def _start_long_r2s(at: AppTest) -> object:
    """Start an R2S run long enough to interact with (every test image, 200 steps); returns its job."""
    at.number_input(key="r2s_images").set_value(256)
    at.number_input(key="r2s_steps").set_value(200)
    at.button(key="r2s_run").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at.session_state["live_job"]


def _wait(cond, timeout: float = 60.0) -> None:
    import time
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "timed out"
        time.sleep(0.05)


def test_r2s_page_stays_interactive_and_stop_keeps_partial_results(zoo_env):
    import time
    at = _app("views/r2s_live.py")
    job = _start_long_r2s(at)
    _wait(lambda: job.partial is not None)                    # the first chunk has landed
    t0 = time.monotonic()
    at.radio(key="cap_method").set_value("Saliency")          # another form, while the run goes on
    at.button(key="cap_explain").click().run()
    assert time.monotonic() - t0 < 30 and job.running, "the page waited for the run"
    assert "Saliency" in _plotly(at, "captum_maps")
    assert any(m.label.startswith("R2S · expectation") for m in at.metric)   # the partial numbers are shown
    at.button(key="r2s_stop").click().run()
    assert job.join(5.0), "Stop did not end the run"
    assert job.finished - job.stop_time < 1.0, "the run went on for more than 1 s after Stop"
    assert job.stopped and job.error is None
    kept = job.partial.n_images
    assert 16 <= kept < 256 and not job.partial.complete
    at.run()
    assert "Stopped" in _texts(at.warning) and f"{kept} images" in _texts(at.warning)
    assert at.session_state["live_job"] is job                # nothing replaced it


def test_live_job_stop_ends_within_a_second_inside_one_long_attack():
    """The forward hook stops any rst computation in a stopped job's thread, mid-attack."""
    import time
    import jobs
    import torch
    from rst.evaluation.attacks import pgd
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    job = jobs.LiveJob("test", {}, lambda j: pgd(net, x, y, 0.1, 0.01, 10 ** 7), pool=jobs.CpuPool()).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    job.stop()
    assert job.join(1.0), "still running 1 s after Stop"
    assert time.monotonic() - t0 < 1.0 and job.stopped and job.error is None


def test_two_lanes_returns_both_results_raises_the_helpers_error_and_stops_with_the_job():
    import time
    sys.path.insert(0, str(APP))
    import jobs
    import torch
    from rst.evaluation.attacks import pgd
    threads = torch.get_num_threads()
    seen = []
    assert jobs.two_lanes(lambda: 1, lambda: seen.append(torch.get_num_threads()) or 2) == (1, 2)
    assert seen == [max(1, threads // 2)] and torch.get_num_threads() == threads   # half for the helper; restored
    with pytest.raises(ValueError, match="lane"):
        jobs.two_lanes(lambda: 1, lambda: (_ for _ in ()).throw(ValueError("lane")))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    x, y = torch.rand(8, 1, 8, 8), torch.zeros(8, dtype=torch.long)
    long = lambda: pgd(net, x, y, 0.1, 0.01, 10 ** 7)                        # noqa: E731
    job = jobs.LiveJob("test", {}, lambda j: jobs.two_lanes(lambda: None, long), pool=jobs.CpuPool()).start()
    time.sleep(0.3)
    t0 = time.monotonic()
    job.stop()                                      # the helper lane is this job's too: Stop ends it
    assert job.join(1.0), "the helper lane still ran 1 s after Stop"
    assert time.monotonic() - t0 < 1.0 and job.stopped and job.error is None


def test_r2s_chunk_on_two_lanes_gives_the_verdicts_of_one_lane(tiny_zoo):
    """The chosen attack and the single-member attacks on one thread each (two torch threads, a lane
    copy) score every (batch, member, image) as the one-lane chunk does."""
    sys.path.insert(0, str(APP))
    import r2s_eval
    import torch
    from rst.network.masks import load_tickets
    cs = load_tickets(next(Path(tiny_zoo["zoo_dir"]).rglob("*.rst.safetensors")))
    x = torch.rand(8, cs.spec.in_channels, cs.spec.image_size, cs.spec.image_size, generator=torch.Generator().manual_seed(0))
    y = torch.arange(8) % cs.spec.num_classes
    cache = {}
    r2s = r2s_eval.build_r2s(cache, cs, "tiny", list(range(len(cs))), "batch", 0, "cpu")
    lane = r2s_eval.lane_copy(cache)
    assert lane is not r2s and r2s_eval.lane_copy(cache) is lane
    kw = dict(eps=0.1, steps=2, seed=0, source_k=0, compare=True, precision="fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        one = r2s_eval.attack_chunk(r2s, "protocol:expectation", x, y, **kw)
        used = []
        two = r2s_eval.attack_chunk(r2s, "protocol:expectation", x, y, lane=lambda: used.append(1) or lane, **kw)
    finally:
        torch.set_num_threads(threads)
    assert used == [1], "the chunk did not take the two-lane path"
    for key in ("clean", "chosen", "paper"):
        assert torch.equal(one[key], two[key]), key
    assert torch.allclose(one["x_adv"], two["x_adv"], atol=1e-6)


def test_the_cpu_pool_queues_jobs_first_come_first_served_and_says_where_they_are():
    import threading
    import jobs
    pool, gate = jobs.CpuPool(slots=1), threading.Event()

    def work(j):
        with j.cpu():
            gate.wait(10)
            j.publish(j.id)
    a = jobs.LiveJob("a", {}, work, pool=pool).start()
    _wait(lambda: a.id in pool._running)
    b = jobs.LiveJob("b", {}, work, pool=pool).start()
    c = jobs.LiveJob("c", {}, work, pool=pool).start()
    _wait(lambda: b.queue_position() == 1 and c.queue_position() == 2)
    assert a.queue_position() == 0 and b.partial is None
    c.stop()                                          # leaves the queue without running
    assert c.join(2.0) and c.stopped and c.partial is None
    gate.set()
    assert a.join(5) and b.join(5) and a.partial == a.id and b.partial == b.id


def test_two_sessions_neither_share_nor_corrupt_each_others_jobs(zoo_env):
    one, two = _app("views/r2s_live.py"), _app("views/r2s_live.py")
    job_one = _start_long_r2s(one)
    assert "live_job" not in two.session_state
    two.number_input(key="r2s_images").set_value(32)
    two.number_input(key="r2s_steps").set_value(2)
    two.button(key="r2s_run").click().run()
    job_two = two.session_state["live_job"]
    assert job_two is not job_one and job_one.running
    one.button(key="r2s_stop").click().run()          # Stop in one session leaves the other's run alone
    assert job_one.join(5) and job_one.stopped
    _finish(two)
    assert not job_two.stopped and job_two.partial.complete and job_two.partial.n_images == 32
    assert one.session_state["live_job"] is job_one and two.session_state["live_job"] is job_two


def test_r2s_second_start_while_running_is_refused_in_one_line(zoo_env):
    at = _app("views/r2s_live.py")
    job = _start_long_r2s(at)
    at.button(key="r2s_run").click().run()
    assert at.session_state["live_job"] is job and job.running        # state unchanged
    assert [w.value for w in at.warning] == ["A computation is already running on this page: press Stop first, "
                                            "or wait for it to end."]
    job.stop()
    assert job.join(5)


def test_r2s_no_members_is_refused_in_one_line_and_starts_nothing(zoo_env):
    at = _app("views/r2s_live.py")
    at.multiselect(key="r2s_members").set_value([])
    at.button(key="r2s_run").click().run()
    assert [e.value for e in at.error] == ["Choose at least one member."]
    assert "live_job" not in at.session_state


def test_a_new_request_on_another_page_cancels_the_old_job(zoo_env):
    at = _app("views/r2s_live.py")
    job = _start_long_r2s(at)
    at.switch_page("views/sparsity.py").run()
    at.radio(key="sparsity_source").set_value("live").run()
    at.number_input(key="sp_images").set_value(16)
    at.number_input(key="sp_steps").set_value(2)
    at.button(key="sp_compute").click().run()
    assert not job.running and job.stopped
    _finish(at)
    assert len(at.dataframe[0].value) == 3


def test_r2s_stored_report_on_opening_and_every_live_accuracy_has_its_error(zoo_env):
    at = _app("views/r2s_live.py")
    assert "Stored zoo report" in at.expander[0].label                       # before any run
    at.number_input(key="r2s_images").set_value(48)
    at.number_input(key="r2s_steps").set_value(2)
    at.button(key="r2s_run").click().run()
    _finish(at)
    percents = [m.value for m in at.metric if "%" in m.value]
    assert percents and all("±" in v for v in percents), percents
    table = _dataframe(at, "clean")
    assert table["± SE"].notna().all() and (table["n"] == 48).all()
    alone = table[table["what"].str.endswith("alone")]
    assert len(alone) == 3 and alone["R2S − this (paired)"].str.match(r"^[+-]\d+\.\d \[[+-]\d+\.\d, [+-]\d+\.\d\]$").all()
    assert "paired 95 % interval" in _texts(at.markdown)


def test_r2s_without_a_stored_report_says_there_is_none(tiny_zoo, tmp_path, monkeypatch):
    import json
    import shutil
    zoo = tmp_path / "zoo"
    shutil.copytree(tiny_zoo["zoo_dir"], zoo)
    index = json.loads((zoo / "index.json").read_text())
    for z in index["zoos"]:
        z.get("reports", {}).pop("r2s", None)
    (zoo / "index.json").write_text(json.dumps(index))
    monkeypatch.setenv("RST_ZOO_DIR", str(zoo))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tiny_zoo["subset"]))
    at = _app("views/r2s_live.py")
    assert "No stored zoo report for this candidate set" in _texts(at.info)


def test_transfer_and_sparsity_live_accuracies_have_their_error(zoo_env):
    at = _app("views/transfer.py")
    at.radio(key="transfer_source").set_value("live").run()
    at.number_input(key="tr_images").set_value(16)
    at.number_input(key="tr_steps").set_value(2)
    at.button(key="tr_compute").click().run()
    _finish(at)
    assert all("±" in m.value for m in at.metric if "%" in m.value)
    at.switch_page("views/sparsity.py").run()
    assert all("±" in m.value for m in at.metric if "%" in m.value)


def test_live_jobs_take_the_cores_the_machine_leaves_free():
    sys.path.insert(0, str(APP))
    import jobs
    assert jobs.torch_threads(cores=2, load=0.1) == 2           # idle: every core
    assert jobs.torch_threads(cores=2, load=7.0) == 1           # busy: one thread, never an OpenMP wait
    assert jobs.torch_threads(cores=2, load=2.3, mine=2) == 2   # its own share of the load is not "others"
    assert jobs.torch_threads(cores=16, load=3.0) == 13
    # what the CPUs do now wins over the lagging load average: idle CPUs after a run, a busy build
    assert jobs.torch_threads(cores=2, load=1.1, busy=0.05) == 2
    assert jobs.torch_threads(cores=2, load=0.1, busy=1.9) == 1
    busy = jobs.cores_busy(0.05)
    assert busy is None or 0.0 <= busy <= (__import__("os").cpu_count() or 1) + 1e-9


def test_the_cpu_measure_sees_a_spinning_process():
    import subprocess
    sys.path.insert(0, str(APP))
    import jobs
    if jobs.cores_busy(0.01) is None:
        pytest.skip("no /proc/stat")
    spin = subprocess.Popen([sys.executable, "-c", "import time\nend = time.time() + 5\nwhile time.time() < end: pass"])
    try:
        import time
        time.sleep(0.5)                                      # the child is up and spinning
        assert jobs.cores_busy(0.5) >= 0.7                   # one core is busy
    finally:
        spin.kill()
        spin.wait()


def test_torch_counts_as_loaded_once_the_warm_up_has_imported_rst_not_before(monkeypatch):
    """``state.torch_loaded()`` is the warm-up's word, not ``"torch" in sys.modules`` (true from the first
    line of torch's import): a page that imported ``rst`` beside the warm-up thread deadlocked on the two
    imports' module locks. Pages other than Home wait for it (``state.wait_imported``)."""
    import threading

    sys.path.insert(0, str(APP))
    import state
    assert "torch" in sys.modules
    monkeypatch.setattr(state, "_IMPORTED", threading.Event())
    monkeypatch.setattr(state, "_WARM_UP", [])
    assert not state.torch_loaded()
    state.wait_imported()                                   # starts the warm-up, returns once it has imported
    assert state.torch_loaded() and [t.name for t in state._WARM_UP] == ["rst-warm-up"]
    assert state.warm_up() is state._WARM_UP[0]             # once per process
    state._WARM_UP[0].join(120)
    assert "state.wait_imported()" in (APP / "explorer.py").read_text()


def test_the_live_r2s_numbers_weight_each_member_by_the_sets_switch_probabilities(tiny_cs):
    """A set that records alpha (a boosted set) is scored as the alpha-weighted expectation, clean and attacked."""
    import dataclasses

    import torch
    sys.path.insert(0, str(APP))
    import r2s_eval
    from rst.evaluation.r2s import R2S
    cs = dataclasses.replace(tiny_cs, probabilities=[0.6, 0.3, 0.1])
    r2s = R2S(cs)
    n = 8
    clean = torch.stack([torch.ones(n), torch.zeros(n), torch.ones(n)])        # members 0 and 2 right
    chosen = torch.stack([torch.zeros(n), torch.ones(n), torch.zeros(n)])     # member 1 right
    s = tiny_cs.spec
    x, y = torch.rand(n, s.in_channels, s.image_size, s.image_size), torch.zeros(n, dtype=torch.long)
    p = dict(eps=0.1, steps=2, precision="fp32", source_k=0, members=(0, 1, 2), switch="batch", seed=0)
    live = r2s_eval.summarize([{"clean": clean, "chosen": chosen, "x_adv": x}], r2s.names, "protocol:expectation",
                              p, "synthetic", 0.1, n, True, x, y, r2s)
    rows = {r["what"]: r for r in live.table}
    assert rows["R2S · clean"]["expected"] == pytest.approx(0.7)              # 0.6 + 0.1, not the uniform 2/3
    assert rows["R2S · expectation"]["expected"] == pytest.approx(0.3)
    assert R2S(tiny_cs).uniform                                                # without alpha: uniform as before

"""The Masks page's upload under ``AppTest`` with every hostile corpus file (issue 13).

Each bad file shows one ``st.error`` line naming it, no "weights checksum verified", no raw
exception, and leaves the session's candidate sets and active set as they were; a file whose
metadata digest was removed loads with a visible warning. One upload takes bounded time.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MAIN = str(REPO / "app" / "main.py")
BAD_MASKS = REPO / "tests" / "bad_masks"
EXPECTED = json.loads((BAD_MASKS / "expected.json").read_text())
ERRORS = sorted(n for n, e in EXPECTED.items() if e["expect"] == "error")
WARNINGS = sorted(n for n, e in EXPECTED.items() if e["expect"] == "warning")
UPLOAD_SECONDS = 10.0       # one page run with one upload (the load itself is bounded by the file checks)


@pytest.fixture
def empty_env(tmp_path, monkeypatch):
    monkeypatch.setenv("RST_ZOO_DIR", str(tmp_path / "no_zoo"))
    monkeypatch.setenv("RST_TEST_SUBSET", str(tmp_path / "no_subset.safetensors"))


def _texts(elements) -> str:
    return "\n".join(str(e.value) for e in elements)


def _state(at: AppTest):
    sets = at.session_state["session_sets"] if "session_sets" in at.session_state else {}
    active = at.session_state["active_key"] if "active_key" in at.session_state else None
    return active, {k: (v["label"], v["source"], id(v["cs"])) for k, v in sets.items()}


def _masks_page_with_a_good_upload_in_use() -> AppTest:
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/masks.py").run()
    at.file_uploader(key="mask_upload").upload("good.rst.safetensors",
                                               (BAD_MASKS / "good.rst.safetensors").read_bytes()).run()
    at.button(key="use_upload").click().run()
    assert not at.exception and at.session_state["active_key"].startswith("upload:")
    return at


def test_every_bad_corpus_file_upload_is_one_error_and_leaves_the_session(empty_env):
    at = _masks_page_with_a_good_upload_in_use()
    before = _state(at)
    slow, failures = [], []
    for name in ERRORS:
        t = time.perf_counter()
        at.file_uploader(key="mask_upload").upload(name, (BAD_MASKS / name).read_bytes()).run()
        seconds = time.perf_counter() - t
        errors = [str(e.value) for e in at.error]
        problems = []
        if at.exception:
            problems.append(f"exception {[e.value for e in at.exception]}")
        if len(errors) != 1 or name not in errors[0] or "cannot be used" not in errors[0] or "\n" in errors[0]:
            problems.append(f"errors {errors}")
        elif EXPECTED[name]["keyword"].lower() not in errors[0].lower():
            problems.append(f"keyword {EXPECTED[name]['keyword']!r} not in {errors[0]!r}")
        if "verified" in _texts(at.success):
            problems.append(f"success {_texts(at.success)!r}")
        if _state(at) != before:
            problems.append("session state changed")
        if seconds > UPLOAD_SECONDS:
            slow.append(f"{name}: {seconds:.1f} s")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    assert not failures, "\n".join(failures)
    assert not slow, slow


def test_upload_without_metadata_digest_warns_visibly(empty_env):
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/masks.py").run()
    for name in WARNINGS:
        at.file_uploader(key="mask_upload").upload(name, (BAD_MASKS / name).read_bytes()).run()
        assert not at.exception and not at.error
        warning = _texts(at.warning)
        assert name in warning and "rst_sha256" in warning and "unverified metadata" in warning, warning
        assert "metadata not verified" in _texts(at.success)


def _respec(data: bytes, **network) -> bytes:
    """``data`` with its network spec changed (digests recomputed: only the size is wrong)."""
    import struct

    from safetensors.torch import load, save

    from rst.network.masks import _metadata_block
    (n,) = struct.unpack("<Q", data[:8])
    meta = json.loads(json.loads(data[8:8 + n])["__metadata__"]["rst"])
    meta["network"].update(network)
    return save(load(data), metadata=_metadata_block(meta))


def test_an_upload_asking_for_a_network_over_the_app_limit_is_refused_before_building(empty_env, monkeypatch):
    import sys
    sys.path.insert(0, str(REPO / "app"))
    try:
        import store
    finally:
        sys.path.remove(str(REPO / "app"))
    import rst.network.masks
    from rst.network.masks import MaskFileError
    built = []
    monkeypatch.setattr(rst.network.masks, "build_network", lambda *a, **k: built.append(1))
    # a ResNet-18 at width 1.5 (25 M weights): within the library's cap, over the app's
    data = _respec((BAD_MASKS / "good.rst.safetensors").read_bytes(), arch="resnet18", width=1.5)
    t = time.perf_counter()
    with pytest.raises(MaskFileError, match="the app loads"):
        store.parse_upload(data)
    assert time.perf_counter() - t < 2 and not built
    at = AppTest.from_file(MAIN, default_timeout=120).run()
    at.switch_page("views/masks.py").run()
    at.file_uploader(key="mask_upload").upload("big.rst.safetensors", data).run()
    assert not at.exception and "the app loads" in _texts(at.error) and not built

"""docs/: every Python block runs as written, and the tables that come from a benchmark are its output.

(The README's own blocks are checked by tests/test_readme.py.) ```text blocks are records of long
commands that were run (minutes to hours on a CPU), not examples, and are not run here.
"""
from __future__ import annotations

import re
import subprocess
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
BLOCKS = [(f.name, i, code) for f in DOCS
          for i, code in enumerate(re.findall(r"^```python\n(.*?)^```", f.read_text(), re.S | re.M))]


@pytest.mark.parametrize("name, i, code", BLOCKS, ids=[f"{n}:{i}" for n, i, _ in BLOCKS])
def test_python_block_runs(name, i, code, tmp_path):
    script = tmp_path / "block.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, str(script)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"docs/{name} block {i}:\n{res.stderr[-2000:]}"


def _between(text: str, start: str, end: str) -> str:
    return text.split(start, 1)[1].split("\n", 1)[1].split(end, 1)[0]


def test_the_switch_probability_tables_are_the_benchmarks_output():
    sys.path.insert(0, str(ROOT / "bench"))
    import switch_probabilities
    doc = (ROOT / "docs" / "r2s-switch.md").read_text()
    assert _between(doc, "<!-- switch-probabilities summary", "<!-- end of summary -->") == \
        switch_probabilities.summary("fmnist-wide")


def test_the_boosted_switch_table_is_the_benchmarks_output():
    sys.path.insert(0, str(ROOT / "bench"))
    import boosted_switch
    doc = (ROOT / "docs" / "r2s-switch.md").read_text()
    marker = doc.split("<!-- boosted-switch summary", 1)[1].split("\n", 1)[0]      # names the command's options
    wide = re.search(r"--wide-images (\d+)", marker)
    assert _between(doc, "<!-- boosted-switch summary", "<!-- end of boosted summary -->") == \
        boosted_switch.summary(1000, int(wide.group(1)) if wide else None)


def test_the_boosted_ablation_table_is_the_benchmarks_output():
    sys.path.insert(0, str(ROOT / "bench"))
    import boosted_switch
    doc = (ROOT / "docs" / "r2s-switch.md").read_text()
    assert _between(doc, "<!-- boosted-ablation", "<!-- end of boosted ablation -->") == boosted_switch.ablation(1000)


def test_the_readmes_bf16_table_is_the_app_benchmarks_output():
    sys.path[:0] = [str(ROOT / "bench"), str(ROOT / "tests")]
    import app_bench
    res = json.loads((ROOT / "bench" / "app-speed.json").read_text())
    readme = (ROOT / "README.md").read_text()
    assert _between(readme, "<!-- bf16-agreement", "<!-- end of bf16-agreement -->") == \
        "\n".join(app_bench.agreement_table(res["r2s"]["agreement"])) + "\n"


def test_the_random_draw_tables_are_the_benchmarks_output():
    sys.path.insert(0, str(ROOT / "bench"))
    import random_draw
    doc = (ROOT / "docs" / "random-draw.md").read_text()
    assert _between(doc, "<!-- random-draw tables", "<!-- end of random-draw tables -->") == \
        random_draw.table("fmnist-wide", ROOT / "pretrained_masks")


def test_the_architecture_page_lists_every_module_under_its_layer():
    text = (ROOT / "docs" / "architecture.md").read_text()
    sections = dict(re.findall(r"^### `rst\.(\w+)`\n(.*?)(?=^### |\Z)", text, re.S | re.M))
    layers = sorted(p.name for p in (ROOT / "rst").iterdir() if (p / "__init__.py").exists())
    assert sorted(sections) == layers
    for layer, body in sections.items():
        listed = set(re.findall(r"^\| `(\w+\.py)` \|", body, re.M))
        present = {f.name for f in (ROOT / "rst" / layer).glob("*.py")} - {"__init__.py"}
        assert listed == present, f"rst.{layer}: missing {sorted(present - listed)}, stale {sorted(listed - present)}"

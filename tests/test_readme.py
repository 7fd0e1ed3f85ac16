"""Every code block of the README and of ``docs/*.md`` runs, so the documentation cannot drift from the code.

Python blocks run as written. Shell blocks are split into commands (``\\`` continuations joined,
comments dropped), and every command must match one rule of ``RULES`` below, which says how it is
checked:

- ``as written``: run exactly as printed (``python`` is this interpreter, i.e. the activated ``.venv``);
- ``toy``: the same command with the listed sizes replaced (flags keep their place, missing ones are
  appended): what is checked is that every flag the README prints exists and the command runs to
  the end, not the numbers;
- ``skip``: not runnable here, with the reason (a GPU, a placeholder path, the test suite itself).

A README command that matches no rule fails ``test_every_readme_command_has_a_rule``: add a rule
when you add a command. Commands run in a scratch folder holding copies of ``pretrained_masks/`` and
``assets/``, so nothing here writes into the repository. Toy runs longer than a few seconds are
marked ``slow``; the quick start, the Python API and the cheap commands run by default. Fenced
``text`` blocks (long benchmark commands, outputs) are not run: only ``python``, ``bash``, ``sh`` and
``shell`` blocks are.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------
# the README's code
# --------------------------------------------------------------------------------------------


def code_blocks(text: str) -> list[tuple[str, str, int]]:
    """``(language, code, line number)`` of every fenced block."""
    out = []
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.S | re.M):
        out.append((m.group(1), m.group(2), text[:m.start()].count("\n") + 1))
    return out


def shell_commands(code: str) -> list[str]:
    """One string per command: continuations joined, comments and blank lines dropped, spaces squeezed."""
    joined = re.sub(r"\\\n\s*", " ", code)
    cmds = []
    for line in joined.splitlines():
        cmd = re.sub(r"\s+#.*$", "", line).strip()
        if cmd and not cmd.startswith("#"):
            cmds.append(re.sub(r"\s+", " ", cmd))
    return cmds


@dataclass(frozen=True)
class Rule:
    """How the README commands that start with ``prefix`` (and contain ``contains``) are checked."""
    prefix: str
    mode: str                                   # "as written" | "toy" | "skip" | "serve" | "dry-run"
    reason: str = ""
    contains: str = ""
    sizes: dict = field(default_factory=dict)   # flag -> value: replaced where present, else appended
    only_if_present: tuple = ()                 # flags of ``sizes`` replaced only when the command has them
    positional: dict = field(default_factory=dict)   # token -> token
    extra: tuple = ()                           # tokens appended (e.g. one more ``--set``)
    needs: tuple = ()                           # (file, command) run first when the file is missing
    slow: bool = False

    def matches(self, cmd: str) -> bool:
        return cmd.startswith(self.prefix) and self.contains in cmd


TINY_SEARCH = {"--preset": "tiny", "--epochs": "1", "--test-images": "32", "--keep-ratios": "0.3,0.5"}
RULES = [
    Rule("make app", "serve", "served on a free port (PORT=…, the Makefile's variable) until its health "
                              "endpoint answers, then stopped"),
    Rule("make test", "dry-run", "the test suite this file belongs to: `make -n test` checks the target "
                                 "exists and runs pytest"),
    Rule("export RST_DATA_DIR=", "skip", "a placeholder path for the real Fashion-MNIST files"),
    Rule("torchrun", "skip", "four GPUs and CIFAR-10"),
    Rule("python -m rst.bench", "skip", "needs a GPU", contains="--device cuda"),
    Rule("python -m rst search", "skip", "torch.compile compiles for minutes on a CPU; the option is tested "
                                         "in tests/test_search.py with the eager backend", contains="compile=True"),
    Rule("python -m rst models", "as written"),
    Rule("python -m rst presets", "as written"),
    Rule("python -m rst inspect", "as written"),
    Rule("python -m rst eval accuracy", "toy", "1,000 images by default", sizes={"--images": "32"}),
    Rule("python -m rst eval curve", "toy", "500 images, PGD-20", sizes={"--images": "16", "--steps": "2"}),
    Rule("python -m rst search", "toy", "the tiny preset, one epoch", sizes=TINY_SEARCH,
         only_if_present=("--keep-ratios",), slow=True),
    Rule("python -m rst train", "toy", "the tiny preset, one epoch", sizes=TINY_SEARCH,
         only_if_present=("--keep-ratios",), slow=True),
    Rule("python -m rst finetune", "toy", "one epoch of the ticket's own (tiny) recipe, after a toy search",
         sizes={"--epochs": "1", "--test-images": "32"},
         needs=(("runs/k0.1/ticket.rst.safetensors", "python -m rst search --preset tiny --keep-ratio 0.1 "
                                                     "--epochs 1 --test-images 0 --out runs/k0.1"),), slow=True),
    Rule("python -m rst zoo build", "toy", "the tiny preset, 2 tickets, 1 epoch, 16 images per report",
         positional={"fmnist-cpu": "tiny", "fmnist-fast": "tiny"},
         sizes={"--keep-ratios": "0.3,0.5", "--eval-images": "16", "--transfer-images": "16", "--r2s-images": "16",
                "--autoattack-images": "0", "--subset-images": "16", "--root": "runs/zoo", "--work": "runs/zoo_work"},
         only_if_present=("--subset-images",), extra=("--set", "epochs=1"), slow=True),
    Rule("python -m rst eval r2s", "toy", "the like-with-like table: 4 + 6 images, 2-step attacks",
         contains="--protocols all", sizes={"--images": "4", "--single-images": "6", "--steps": "2",
                                            "--long-steps": "2", "--apgd-steps": "2", "--apgd-t-steps": "2",
                                            "--eot-samples": "1"}, slow=True),
    Rule("python -m rst eval r2s", "toy", "AutoAttack rand with EOT: 2 images, 2 steps",
         contains="autoattack_rand", sizes={"--images": "2", "--steps": "2"}, slow=True),
    Rule("python -m rst eval r2s", "toy", "16 images, 2 steps, a 20-query Square",
         sizes={"--images": "16", "--steps": "2", "--sanity-images": "8", "--square-queries": "20"},
         only_if_present=("--sanity-images",), slow=True),
    Rule("OMP_NUM_THREADS=1 python -m rst.bench search", "toy", "a quarter-width Conv-4, batch 16, 1 timed step of PGD-1",
         sizes={"--width": "0.25", "--batch-size": "16", "--steps": "1", "--warmup": "1", "--attack-steps": "1"},
         slow=True),
    Rule("OMP_NUM_THREADS=1 python -m rst.bench time-to-ticket", "toy", "synthetic data, 1 s of training per contestant",
         sizes={"--toy": None, "--budget": "1", "--points": "1"}, slow=True),
    Rule("bash bench/gpu_check.sh", "skip", "needs a GPU; every command in it is parsed by tests/test_bench.py"),
    Rule("OMP_NUM_THREADS=1 python -m rst.bench tickets", "toy", "2 tickets, 1 step of 16 images",
         sizes={"--width": "0.25", "--batch-size": "16", "--attack-steps": "1", "--steps": "1", "--warmup": "1",
                "--k": "2"}, slow=True),
    Rule("python bench/zoo_table.py", "as written"),
    Rule("python bench/app_bench.py", "toy", "the tiny zoo, no browser", sizes={"--tiny": None, "--skip-browser": None},
         slow=True),
    Rule("OMP_NUM_THREADS=1 python bench/app_bench.py", "toy", "the tiny zoo", sizes={"--tiny": None}, slow=True),
]


def rule_for(cmd: str) -> Rule | None:
    return next((r for r in RULES if r.matches(cmd)), None)


def toy_command(rule: Rule, cmd: str) -> list[str]:
    """The command's tokens with the rule's sizes applied."""
    tokens = [rule.positional.get(t, t) for t in shlex.split(cmd)]
    for flag, value in rule.sizes.items():
        if flag in tokens:
            if value is not None:
                tokens[tokens.index(flag) + 1] = value
        elif flag not in rule.only_if_present:
            tokens += [flag] if value is None else [flag, value]
    return tokens + list(rule.extra)


def documents() -> list[Path]:
    """The README and every page of ``docs/``: each of their code blocks is run."""
    return [README, *sorted(DOCS.glob("*.md"))]


def _blocks(docs: list[Path] | None = None) -> list[tuple[str, str, str]]:
    """``(language, code, "file:line")`` of every fenced block of ``docs`` (default: all documents)."""
    return [(lang, code, f"{doc.relative_to(ROOT)}:{line}") for doc in (docs or documents())
            for lang, code, line in code_blocks(doc.read_text())]


def readme_commands(docs: list[Path] | None = None) -> list[tuple[str, str]]:
    return [(where, cmd) for lang, code, where in _blocks(docs)
            if lang in ("bash", "sh", "shell") for cmd in shell_commands(code)]


def readme_python(docs: list[Path] | None = None) -> list[tuple[str, str]]:
    return [(where, code) for lang, code, where in _blocks(docs) if lang == "python"]


# --------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A scratch folder with copies of what the README's commands read."""
    d = tmp_path_factory.mktemp("readme")
    shutil.copytree(ROOT / "pretrained_masks", d / "pretrained_masks")
    shutil.copytree(ROOT / "assets", d / "assets")
    (d / "bench").mkdir()
    return d


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}


def run_tokens(tokens: list[str], cwd: Path, timeout: float = TIMEOUT_S) -> subprocess.CompletedProcess:
    env = _env()
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", tokens[0]):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    if tokens[0] == "python":
        tokens = [sys.executable, *tokens[1:]]
    if len(tokens) > 1 and tokens[1].startswith("bench/"):         # the repo's scripts, run from the scratch folder
        tokens[1] = str(ROOT / tokens[1])
    proc = subprocess.run(tokens, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, (f"{' '.join(tokens)} exited with {proc.returncode}\n"
                                  f"stdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}")
    return proc


def _venv_ready() -> bool:
    return (ROOT / ".venv" / ".installed").exists() and subprocess.run(
        ["make", "-q", "venv"], cwd=ROOT, capture_output=True).returncode == 0


def serve_and_stop(cmd: str) -> None:
    """``make app`` on a free port until Streamlit's health endpoint answers; then the process group is stopped."""
    from browser import free_port, stop_server, wait_healthy
    if not _venv_ready():
        pytest.skip("make app would (re)create .venv first (minutes, network): run it by hand")
    port = free_port()
    proc = subprocess.Popen([*shlex.split(cmd), f"PORT={port}"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        try:
            wait_healthy(port, proc, timeout=120)
        except (RuntimeError, TimeoutError) as e:
            raise AssertionError(f"{cmd}: {e}") from None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as r:
            assert r.status == 200
    finally:
        stop_server(proc)


def _params():
    out = []
    for line, cmd in readme_commands():
        rule = rule_for(cmd)
        marks = [pytest.mark.slow] if rule is not None and rule.slow else []
        out.append(pytest.param(cmd, rule, id=f"{line}:{cmd[:70]}", marks=marks))
    return out


# --------------------------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------------------------


def test_every_readme_command_has_a_rule():
    missing = [f"{line}: {cmd}" for line, cmd in readme_commands() if rule_for(cmd) is None]
    assert not missing, "README/docs commands without a rule in tests/test_readme.py:\n" + "\n".join(missing)


def test_every_rule_is_used():
    cmds = [cmd for _, cmd in readme_commands()]
    unused = [r.prefix + (f" (… {r.contains} …)" if r.contains else "") for r in RULES
              if not any(rule_for(c) is r for c in cmds)]
    assert not unused, f"rules that no README/docs command uses any more: {unused}"


def test_the_readme_has_python_and_shell_blocks():
    assert len(readme_python([README])) >= 1 and len(readme_commands([README])) >= 10


def test_docs_blocks_are_collected_with_their_file_and_line():
    """The pages of ``docs/`` are part of what runs: a block there is found, named by file and line."""
    assert any(where.startswith("docs/") for where, _ in readme_commands() + readme_python())
    tree = code_blocks("x\n```bash\npython -m rst models\n```\n```text\nnot run\n```\n")
    assert [(lang, line) for lang, _, line in tree] == [("bash", 2), ("text", 5)]


def test_readme_is_short_and_the_documentation_names_no_issues_or_sessions():
    assert len(README.read_text().splitlines()) <= 260
    for doc in documents():
        text = doc.read_text()
        assert not re.search(r"(?<![\w&])#\d+\b|\bissue \d+|\bissue's\b|\bthis session\b", text), doc.name


@pytest.mark.parametrize("code", [pytest.param(c, id=str(line)) for line, c in readme_python()])
def test_python_block_runs_as_written_and_writes_only_ignored_files(code, workdir):
    before = {p for p in workdir.rglob("*")}
    script = workdir / "readme_block.py"
    script.write_text(code)
    try:
        proc = run_tokens([sys.executable, str(script)], workdir)
    finally:
        script.unlink()
    assert proc.stdout.strip(), "the example shows its progress"
    written = sorted(p.relative_to(workdir) for p in set(workdir.rglob("*")) - before if p.is_file())
    for rel in written:          # what the example writes, the repository's .gitignore covers
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(rel)], cwd=ROOT).returncode == 0
        assert ignored, f"the README example writes {rel}, which .gitignore does not cover"


@pytest.mark.parametrize(("cmd", "rule"), _params())
def test_shell_command(cmd, rule, workdir):
    assert rule is not None, f"no rule for {cmd!r} (see test_every_readme_command_has_a_rule)"
    if rule.mode == "skip":
        pytest.skip(rule.reason)
    if rule.mode == "serve":
        serve_and_stop(cmd)
        return
    if rule.mode == "dry-run":
        out = subprocess.run([*shlex.split(cmd), "-n"], cwd=ROOT, capture_output=True, text=True).stdout
        assert "pytest" in out, out
        return
    for path, prerequisite in rule.needs:
        if not (workdir / path).exists():
            run_tokens(shlex.split(prerequisite), workdir)
    tokens = shlex.split(cmd) if rule.mode == "as written" else toy_command(rule, cmd)
    proc = run_tokens(tokens, workdir)
    assert proc.stdout.strip() or proc.stderr.strip(), "the command printed nothing"


def test_toy_sizes_replace_flags_in_place_and_append_missing_ones():
    rule = next(r for r in RULES if r.prefix == "python -m rst zoo build")
    toy = toy_command(rule, "python -m rst zoo build fmnist-cpu --keep-ratios 0.05,0.1 --set width=1.0")
    assert toy[:6] == ["python", "-m", "rst", "zoo", "build", "tiny"]
    assert toy[toy.index("--keep-ratios") + 1] == "0.3,0.5"
    assert toy[-2:] == ["--set", "epochs=1"] and "width=1.0" in toy
    assert "--subset-images" not in toy                 # only where the command has it


# --------------------------------------------------------------------------------------------
# the README's numbers
# --------------------------------------------------------------------------------------------


def test_the_default_zoos_tables_are_the_ones_its_index_and_reports_give():
    """The README's tables for the app's default zoo are ``bench/zoo_table.py``'s output pasted as it
    is: a zoo rebuilt without updating the README (or a number edited by hand) fails here."""
    import importlib.util
    import json
    spec = importlib.util.spec_from_file_location("zoo_table", ROOT / "bench" / "zoo_table.py")
    zoo_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo_table)
    default = json.loads((ROOT / "pretrained_masks" / "index.json").read_text())["zoos"][0]["id"]
    readme = README.read_text().splitlines()
    missing = [line for line in zoo_table.tables(default).splitlines() if line.strip() and line not in readme]
    assert not missing, f"README lines that bench/zoo_table.py {default} prints differently:\n" + "\n".join(missing)

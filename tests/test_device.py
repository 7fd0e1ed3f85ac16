"""rst.runtime.device.deterministic: sets what PyTorch needs for reproducible CUDA runs, and restores the previous state."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from rst.runtime.device import CUBLAS_WORKSPACE_CONFIG, deterministic
from rst.network.models import NetworkSpec, build_network


def _state():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"))


@pytest.fixture
def clean_state(monkeypatch):
    """Start from PyTorch's defaults (and no cuBLAS setting); put back whatever was there after."""
    before = _state()
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.use_deterministic_algorithms(False)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = False, True
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_deterministic_sets_everything_and_restores_it(clean_state):
    before = _state()
    assert before == (False, False, False, True, None)
    with deterministic():
        assert _state() == (True, False, True, False, CUBLAS_WORKSPACE_CONFIG)
    assert _state() == before


def test_deterministic_warn_only_and_a_users_cublas_setting_are_kept(clean_state, monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")
    with deterministic(warn_only=True):
        assert _state() == (True, True, True, False, ":16:8")       # the user's own setting is not replaced
    assert _state() == (False, False, False, True, ":16:8")


def test_deterministic_restores_on_error_and_nests(clean_state):
    with pytest.raises(KeyError):
        with deterministic():
            raise KeyError("boom")
    assert _state() == (False, False, False, True, None)
    with deterministic(warn_only=True):
        with deterministic():
            assert _state()[:2] == (True, False)
        assert _state() == (True, True, True, False, CUBLAS_WORKSPACE_CONFIG)   # the outer one's settings
    assert _state() == (False, False, False, True, None)


def test_deterministic_disabled_changes_nothing(clean_state):
    with deterministic(False):
        assert _state() == (False, False, False, True, None)


def test_deterministic_mode_runs_a_cpu_training_step(clean_state, tiny_spec):
    """On a CPU every op of a network's forward/backward has a deterministic kernel: nothing refuses."""
    model = build_network(tiny_spec, keep_ratio=0.5)
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    with deterministic():
        F.cross_entropy(model(x), y).backward()
    assert all(l.grad is not None for l in model.parameters() if l.requires_grad)


def test_which_pooling_has_a_deterministic_backward():
    """The docstring's claim: global pooling (ResNet/WRN) is a mean, Conv-4's 7x7 -> 4x4 is adaptive pooling
    (adaptive_avg_pool2d_backward_cuda, which has no deterministic CUDA kernel)."""
    x = torch.rand(2, 3, 7, 7, requires_grad=True)
    assert type(F.adaptive_avg_pool2d(x, 1).grad_fn).__name__.startswith("MeanBackward")
    assert type(F.adaptive_avg_pool2d(x, 4).grad_fn).__name__.startswith("AdaptiveAvgPool2DBackward")
    conv4 = build_network(NetworkSpec("fmnist_conv4", dataset="fashion_mnist", width=0.25), keep_ratio=0.5)
    assert any(isinstance(m, torch.nn.AdaptiveAvgPool2d) and m.output_size not in (1, (1, 1))
               for m in conv4.modules())


def test_cli_deterministic_flag_holds_for_the_command_only(clean_state, monkeypatch, tmp_path):
    import rst.cli.commands as cli
    import rst.cli.run_commands as run_commands
    seen = []

    def fake_command(args):
        seen.append((args.command, torch.are_deterministic_algorithms_enabled(),
                     os.environ.get("CUBLAS_WORKSPACE_CONFIG"), torch.backends.cudnn.benchmark))
        return 0
    for name in ("_cmd_search", "_cmd_train", "_cmd_finetune"):
        monkeypatch.setattr(run_commands, name, fake_command)
    out = ["--out", str(tmp_path)]
    assert cli.main(["search", *out, "--deterministic"]) == 0
    assert cli.main(["train", *out, "--deterministic"]) == 0
    assert cli.main(["finetune", "ticket.rst.safetensors", *out, "--deterministic"]) == 0
    assert cli.main(["train", *out]) == 0
    on = (True, CUBLAS_WORKSPACE_CONFIG, False)
    assert seen == [("search", *on), ("train", *on), ("finetune", *on), ("train", False, None, True)]
    assert _state() == (False, False, False, True, None)                      # restored after each command

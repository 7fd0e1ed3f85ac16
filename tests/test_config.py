"""rst.runtime.config: every config dataclass refuses a value that does not fit its field, and unknown fields."""
from __future__ import annotations

import numpy as np
import pytest

from rst.evaluation.attacks import AttackConfig
from rst.network.models import NetworkSpec
from rst.search.loop import SearchConfig, preset


@pytest.mark.parametrize("change, message", [
    ({"width": "abc"}, "width must be a finite number, got 'abc'"),
    ({"eps": float("inf")}, "eps must be a finite number, got inf"),
    ({"lr": float("nan")}, "lr must be a finite number, got nan"),
    ({"augment": 0}, "augment must be True or False, got 0"),
    ({"seed": 1.5}, "seed must be a whole number, got 1.5"),
    ({"epochs": True}, "epochs must be a whole number, got True"),
    ({"lr_milestones": [0.5]}, r"lr_milestones must be a tuple of finite numbers, got \[0.5\]"),
    ({"train_subset": "10"}, "train_subset must be a whole number or None, got '10'"),
    ({"train_subset": -3}, r"train_subset must be >= 1 \(or None: all the images\), got -3"),
    ({"inner_attack": 3}, "inner_attack must be a string, got 3"),
])
def test_search_config_refuses_a_value_that_does_not_fit(change, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        preset("tiny", **change)


def test_search_config_accepts_what_its_fields_mean():
    cfg = preset("tiny", width=1, train_subset=None, lr_milestones=(), seed=np.int64(3), eps=np.float64(0.1))
    assert cfg.width == 1 and cfg.seed == 3
    assert preset("tiny", train_subset=100).train_subset == 100


def test_unknown_fields_are_named_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown SearchConfig fields: \['nosuch'\]; known: arch, dataset"):
        preset("tiny", nosuch=1)
    with pytest.raises(ValueError, match=r"unknown SearchConfig fields: \['nosuch'\]"):
        SearchConfig.from_dict({**preset("tiny").to_dict(), "nosuch": 1})


def test_network_spec_and_attack_config_check_their_fields_too():
    with pytest.raises(ValueError, match="width must be a finite number, got 'wide'"):
        NetworkSpec("fmnist_conv4", width="wide")
    with pytest.raises(ValueError, match="steps must be a whole number, got 2.5"):
        AttackConfig("pgd", steps=2.5)
    with pytest.raises(ValueError, match="eps must be a finite number, got nan"):
        AttackConfig("pgd", eps=float("nan"))
    assert AttackConfig("pgd", eps=np.float64(0.1), steps=np.int64(3)).steps == 3

import optuna
import pytest

from model.config import TrialConfig
from spaces.space import DEFAULT_SPACE, SpaceError, load_space, parse_space

SPACE = """
description: test space
fixed:
  hidden_size: 16
  num_heads: 2
params:
  lr:          {float: [1.0e-4, 1e-2], log: true}
  loss:        {choice: [ce, focal]}
  focal_gamma: {float: [0.5, 3.0], when: {loss: focal}}
  msd_count:   {int: [1, 4]}
  msd_reduce:  {choice: [mean, sum], when: {msd_count: [2, 3, 4]}}
  label_smoothing: {value: 0.1, when: {loss: ce}}
warm_start:
  plain: {lr: 1.0e-3, loss: ce, msd_count: 1}
  focal: {loss: focal, focal_gamma: 2.0}
"""


def sample_many(space, n=40, seed=0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        out.append(space.sample(trial))
        study.tell(trial, 0.0)
    return out


def test_parses_fixed_params_and_warm_start():
    space = parse_space(SPACE)
    assert space.fixed == {"hidden_size": 16, "num_heads": 2}
    assert space.searched == ["lr", "loss", "focal_gamma", "msd_count", "msd_reduce"]
    lr = next(p for p in space.params if p.name == "lr")
    assert (lr.low, lr.high, lr.log) == (1e-4, 1e-2, True)  # "1e-2" (a YAML string) read as a number
    assert space.warm_start == {"plain": {"lr": 1e-3, "loss": "ce", "msd_count": 1},
                                "focal": {"loss": "focal", "focal_gamma": 2.0}}


def test_conditional_parameters_exist_only_under_their_condition():
    samples = sample_many(parse_space(SPACE))
    assert {s["loss"] for s in samples} == {"ce", "focal"}
    for s in samples:
        assert ("focal_gamma" in s) == (s["loss"] == "focal")
        assert ("label_smoothing" in s) == (s["loss"] == "ce")
        assert ("msd_reduce" in s) == (s["msd_count"] > 1)
        if s["loss"] == "ce":
            assert s["label_smoothing"] == 0.1
        assert 1e-4 <= s["lr"] <= 1e-2


def test_samples_make_valid_trial_configs():
    space = parse_space(SPACE)
    for s in sample_many(space, n=10):
        cfg = space.config(s, max_epochs=2)
        assert isinstance(cfg, TrialConfig) and cfg.hidden_size == 16 and cfg.max_epochs == 2


def test_children_are_ordered_after_parents_whatever_the_file_order():
    space = parse_space("params:\n  focal_gamma: {float: [1, 2], when: {loss: focal}}\n  loss: {choice: [ce, focal]}\n")
    assert [p.name for p in space.params] == ["loss", "focal_gamma"]


def test_shipped_demo_space_loads():
    space = load_space(DEFAULT_SPACE)
    assert "lr" in space.searched and "baseline" in space.warm_start
    assert load_space("demo") == space


BAD = [
    ("params:\n  lrate: {float: [0.1, 1]}\n",
     r"x.yaml: line 2: parameter 'lrate' is not a TrialConfig field; valid fields are: encoder"),
    ("params:\n  lr: {float: [0.1, 0.01]}\n", r"line 2: `lr`: low 0.1 is greater than high 0.01"),
    ("params:\n  dropout: {float: [0, 0.5], log: true}\n", r"a log range needs low > 0, got 0"),
    ("params:\n  loss: {choice: []}\n", r"choice must be a non-empty list"),
    ("params:\n  loss: {choice: [ce, hinge]}\n", r"'hinge' is not a known loss"),
    ("params:\n  focal_gamma: {float: [-1, 2]}\n", r"`focal_gamma` is -1.0, but must be > 0"),
    ("params:\n  batch_size: {float: [8, 64]}\n", r"`batch_size` is an integer field; use int"),
    ("params:\n  lr: {uniform: [0.1, 1]}\n", r"`lr` has unknown key 'uniform'"),
    ("params:\n  lr: {float: [0.1, 1], choice: [1]}\n", r"needs exactly one of float, int, choice, value"),
    ("params:\n  loss: {choice: [ce]}\n  focal_gamma: {float: [1, 2], when: {los: focal}}\n",
     r"line 3: `focal_gamma` has a condition on 'los', which is not a parameter of this space"),
    ("params:\n  loss: {choice: [ce]}\n  focal_gamma: {float: [1, 2], when: {loss: focal}}\n",
     r"condition loss = 'focal', which `loss` can never take"),
    ("params:\n  lr: {float: [0.1, 1]}\n  lr: {float: [0.1, 1]}\n", r"line 3: key 'lr' repeated \(first on line 2\)"),
    ("fixed:\n  lr: 0.1\nparams:\n  lr: {float: [0.1, 1]}\n", r"'lr' is both fixed and searched"),
    ("fixed:\n  lr: 0.1\n", r"declares nothing to search"),
    ("params:\n  lr: {float: [0.01, 0.1]}\nwarm_start:\n  a: {lr: 0.5}\n",
     r"line 4: warm-start point 'a' sets lr = 0.5, outside its domain"),
    ("params:\n  lr: {float: [0.01, 0.1]}\nwarm_start:\n  a: {dropout: 0.5}\n",
     r"sets 'dropout', which is not a searched parameter"),
    ("params:\n  loss: {choice: [ce, focal]}\n  focal_gamma: {float: [1, 2], when: {loss: focal}}\n"
     "warm_start:\n  a: {loss: ce, focal_gamma: 1.5}\n",
     r"sets 'focal_gamma', but its condition loss in \['focal'\] does not hold"),
    ("params:\n  a: {choice: [1]\n", r"not valid YAML"),
    ("spaces: 1\n", r"unknown top-level key 'spaces'"),
    ("params:\n  loss: {choice: [ce, focal], when: {focal_gamma: 1}}\n"
     "  focal_gamma: {float: [1, 2], when: {loss: focal}}\n", r"conditions form a cycle"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_spaces_name_line_parameter_and_fix(text, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(text, source="x.yaml")


def test_missing_space_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SpaceError, match=r"not found: pass a YAML file or one of: .*demo"):
        load_space(tmp_path / "none.yaml")

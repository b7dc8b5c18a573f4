import numpy as np
import optuna
import pytest

from model.config import TrialConfig
from model.errors import ConfigError
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
    ("params:\n  cnn_kernels: {choice: ['2,3', '2,x']}\n",
     r"line 2: `cnn_kernels` is '2,x', but must be kernel widths separated by commas"),
    ("fixed:\n  encoder: textcnn\n  rnn: gru\nparams:\n  cnn_filters: {choice: [64, 33]}\n"
     "  cnn_kernels: {choice: ['1,2,3', '2,3']}\n",
     r"cnn_filters = 33 \(line 5\), cnn_kernels = '1,2,3' \(line 6\) cannot run: encoder 'textcnn' is 99 wide"),
]


@pytest.mark.parametrize("text, message", BAD)
def test_bad_spaces_name_line_parameter_and_fix(text, message):
    with pytest.raises(SpaceError, match=message):
        parse_space(text, source="x.yaml")


def test_missing_space_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(SpaceError, match=r"not found: pass a YAML file or one of: .*demo"):
        load_space(tmp_path / "none.yaml")


# --- issue 12: limits, cross-field combinations, step grids, YAML limits (the refusals themselves
# are in tests/catalogue/test_space_inputs.py) ---


@pytest.mark.parametrize("name", ["demo", "seed", "pretrained", "cpu"])
def test_shipped_spaces_pass_the_combination_check_fast(name):
    import time

    from spaces.space import check_combinations

    space = load_space(name, sets={"checkpoint": "/some/dir"} if name == "pretrained" else None)
    started = time.perf_counter()
    check_combinations(space, {"max_epochs": 4, "seed": 0})
    assert time.perf_counter() - started < 0.1


def test_the_wordvec_space_runs_with_or_without_vectors_and_refuses_missing_ones(tmp_path):
    from rundir.preflight import check_space

    overrides = {"max_epochs": 8, "seed": 0}
    check_space(load_space("cpu"), overrides)  # random init: nothing to read
    with pytest.raises(SpaceError, match=r"trials with encoder = 'textcnn' cannot run: `checkpoint` is '.*none' "
                                         r"\(word vectors of encoder 'textcnn'\), but .*python -m search embed"):
        check_space(load_space("cpu", sets={"checkpoint": str(tmp_path / "none")}), overrides)


def test_the_wordvec_space_takes_the_bigram_view_with_a_checkpoint_of_pairs_only(tmp_path):
    from model.wordvec import write_checkpoint
    from rundir.preflight import check_space

    overrides = {"max_epochs": 8, "seed": 0}
    with pytest.raises(SpaceError, match=r"encoder = 'textcnn'.*`view` bigrams \(encoder 'textcnn'\) takes its pairs "
                                         r"from a checkpoint, but `checkpoint` is empty"):
        load_space("cpu", sets={"view": "bigrams"})
    for view in ("tokens", "bigrams"):
        write_checkpoint(tmp_path / view, tokens=["a b", "b c"], vectors=np.zeros((2, 4), np.float32),
                         record={"format": "wordvec", "dim": 4, "view": view})
    check_space(load_space("cpu", sets={"view": "bigrams", "checkpoint": str(tmp_path / "bigrams")}), overrides)
    with pytest.raises(SpaceError, match=r"it holds vectors of tokens and `view` is 'bigrams'; set view=tokens"):
        check_space(load_space("cpu", sets={"view": "bigrams", "checkpoint": str(tmp_path / "tokens")}), overrides)


def test_combinations_try_conditional_fields_active_and_inactive():
    # rnn is only drawn under loss = focal (a parent outside the cross fields), so trials also run
    # with the default rnn = 'none': both are tried, and the odd hidden_size fails only with lstm.
    space_text = ("fixed: {hidden_size: 63, num_heads: 1}\nparams:\n  loss: {choice: [ce, focal]}\n"
                  "  rnn: {choice: [lstm], when: {loss: focal}}\n")
    with pytest.raises(SpaceError, match=r"rnn = 'lstm' \(line 4\)"):
        parse_space(space_text)
    space = parse_space(space_text.replace("63", "64"))
    assert space.draws(("rnn",)) == [{"rnn": "lstm"}, {}]


def test_a_wide_int_range_of_a_cross_field_is_checked_at_its_bounds():
    from spaces.space import MAX_GRID

    space = parse_space("fixed: {num_heads: 8}\nparams:\n  hidden_size: {int: [64, 8192], step: 8}\n")
    (param,) = space.params
    assert (8192 - 64) // 8 >= MAX_GRID and param.grid() == (64, 8192)
    narrow = parse_space("fixed: {num_heads: 8}\nparams:\n  hidden_size: {int: [64, 128], step: 32}\n")
    assert narrow.params[0].grid() == (64, 96, 128)


def test_swa_start_is_checked_against_max_epochs_only_once_the_flag_is_known():
    from spaces.space import check_combinations

    space = parse_space("params:\n  swa_start: {int: [0, 5]}\n")  # --max-epochs may be 10
    check_combinations(space, {"max_epochs": 5})
    with pytest.raises(SpaceError, match=r"swa_start = 4 \(line 2\) cannot run"):
        check_combinations(space, {"max_epochs": 3})


def test_steps_that_divide_the_range_and_warm_starts_on_the_grid_are_accepted():
    space = parse_space("params:\n  dropout: {float: [0.0, 0.5], step: 0.1}\n  batch_size: {int: [16, 64], step: 16}\n"
                        "warm_start:\n  a: {dropout: 0.3, batch_size: 48}\n")
    assert space.warm_start["a"] == {"dropout": 0.3, "batch_size": 48}
    dropout = space.params[0]
    assert dropout.contains(0.3) and not dropout.contains(0.35)


def test_sizes_up_to_the_sanity_limits_are_accepted():
    from model.config import LIMITS

    TrialConfig(batch_size=LIMITS["batch_size"][0], hidden_size=LIMITS["hidden_size"][0], num_heads=1)
    with pytest.raises(ConfigError, match=r"raise LIMITS\['batch_size'\] in model/config.py"):
        TrialConfig(batch_size=LIMITS["batch_size"][0] + 1)


def test_ordinary_aliases_and_merge_keys_are_accepted():
    space = parse_space("params:\n  lr: &rate {float: [1.0e-4, 1.0e-2], log: true}\n  head_lr: *rate\n"
                        "warm_start:\n  a: &a {lr: 1.0e-3, head_lr: 1.0e-3}\n  b: {<<: *a, lr: 2.0e-3}\n")
    assert space.warm_start["b"] == {"lr": 2.0e-3, "head_lr": 1.0e-3}


def test_the_docs_document_the_space_limits_and_keep_the_resume_warning():
    from pathlib import Path

    docs = Path(__file__).resolve().parents[2] / "docs"
    spaces = " ".join((docs / "spaces-and-models.md").read_text().split())
    assert "alias bomb is refused" in spaces and "`LIMITS` in `model/config.py`" in spaces
    reference = " ".join((docs / "reference.md").read_text().split())
    assert "Resuming unpickles Ray's saved state: resume only run directories you trust." in reference

"""Bad search-space files, given to `launch --space FILE` and `train-one --space FILE`.

Every case is refused before Ray starts (launch) or before training starts (train-one): the
autouse fixture makes `ray.init` and `fit` fail the test if they are reached. The error names the
file, the line or parameter at fault and the fix. Most files are refused by both commands (both
read the space with `spaces.space.load_space`); a few rules need the driver's flags and are checked
by launch's preflight only (LAUNCH_ONLY).
"""

from __future__ import annotations

import pytest

SEARCHED = "params:\n  lr: {float: [1.0e-4, 1.0e-2], log: true}\n"  # line 2 searches lr

# name: (file content, needles besides the file's path)
CASES: dict[str, tuple[str | bytes, list[str]]] = {
    # --- sizes above the sanity limits (model/config.py LIMITS) ---
    "batch_size 1e29": ("fixed: {batch_size: 1e29}\n" + SEARCHED,
                        ["line 1", "`batch_size`", "sanity limit 65536",
                         "raise LIMITS['batch_size'] in model/config.py"]),
    "hidden_size 1e9 choice": ("params:\n  hidden_size: {choice: [64, 1000000000]}\n",
                               ["line 2", "`hidden_size`", "sanity limit 16384", "model/config.py"]),
    "num_layers range top": ("params:\n  num_layers: {int: [1, 100000]}\n",
                             ["line 2", "`num_layers`", "sanity limit 256", "LIMITS['num_layers']"]),
    "intermediate_size value": ("params:\n  intermediate_size: {value: 1.0e12}\n" + SEARCHED[8:],
                                ["line 2", "`intermediate_size`", "sanity limit 65536"]),
    # --- combinations TrialConfig rejects (checked over every combination of CROSS_FIELDS) ---
    "num_heads does not divide hidden_size": (
        "fixed: {hidden_size: 64}\nparams:\n  num_heads: {choice: [2, 3]}\n",
        ["hidden_size = 64 (line 1)", "num_heads = 3 (line 3)", "not divisible", "narrow the choices"]),
    "hidden_size range off num_heads": (
        "fixed: {num_heads: 4}\nparams:\n  hidden_size: {int: [60, 70]}\n",
        ["num_heads = 4 (line 1)", "hidden_size = 61 (line 3)", "multiple of num_heads"]),
    "odd hidden_size with an rnn": (
        "fixed: {hidden_size: 63, num_heads: 1}\nparams:\n  rnn: {choice: [none, lstm]}\n",
        ["rnn = 'lstm' (line 3)", "hidden_size = 63", "needs it even"]),
    "checkpoint encoder choice without checkpoint": (
        "params:\n  encoder: {choice: [tiny, bert]}\n",
        ["encoder = 'bert' (line 2)", "`checkpoint` is ''", "set it to a directory"]),
    "swa_start after fixed max_epochs": (
        "fixed: {max_epochs: 3}\nparams:\n  swa_start: {int: [0, 5]}\n",
        ["max_epochs = 3 (line 1)", "swa_start = 4 (line 3)", "lower it or set 0"]),
    # --- steps and grids ---
    "int step does not divide range": ("params:\n  batch_size: {int: [16, 60], step: 16}\n",
                                       ["line 2", "`batch_size`", "60 is never drawn", "make high 48"]),
    "float step does not divide range": ("params:\n  dropout: {float: [0.0, 0.45], step: 0.1}\n",
                                         ["line 2", "`dropout`", "make high 0.4"]),
    "fractional int step": ("params:\n  batch_size: {int: [16, 64], step: 2.5}\n",
                            ["line 2", "`batch_size`", "needs a whole step"]),
    "zero step": ("params:\n  dropout: {float: [0.0, 0.5], step: 0}\n",
                  ["line 2", "`dropout`", "step must be a positive number"]),
    "warm start off the step grid": (
        "params:\n  batch_size: {int: [16, 64], step: 16}\nwarm_start:\n  base: {batch_size: 20}\n",
        ["line 4", "'base'", "batch_size = 20", "step 16"]),
    "condition off the parent's grid": (
        "params:\n  msd_count: {int: [2, 8], step: 2}\n  msd_reduce: {choice: [mean, sum], when: {msd_count: 3}}\n",
        ["line 3", "`msd_reduce`", "msd_count = 3", "can never take"]),
    "log with step": ("params:\n  lr: {float: [1.0e-4, 1.0e-2], log: true, step: 1.0e-4}\n",
                      ["line 2", "`lr`", "drop one"]),
    # --- ranges ---
    "log range from 0": ("params:\n  dropout: {float: [0.0, 0.5], log: true}\n",
                         ["line 2", "`dropout`", "needs low > 0"]),
    "low above high": ("params:\n  dropout: {float: [0.5, 0.1]}\n",
                       ["line 2", "`dropout`", "low 0.5 is greater than high 0.1"]),
    "bound outside the field": ("params:\n  dropout: {float: [0.0, 1.5]}\n",
                                ["line 2", "`dropout`", "must be < 1"]),
    "fractional int bounds": ("params:\n  msd_count: {int: [1.5, 4]}\n", ["line 2", "`msd_count`", "whole numbers"]),
    "float range on an int field": ("params:\n  batch_size: {float: [16, 64]}\n",
                                    ["line 2", "`batch_size`", "use int: [16, 64]"]),
    "range on a name field": ("params:\n  loss: {int: [1, 2]}\n", ["line 2", "`loss`", "use choice"]),
    "infinite bound": ("params:\n  focal_gamma: {float: [1.0, .inf]}\n", ["line 2", "`focal_gamma`", "finite"]),
    "one bound": ("params:\n  dropout: {float: [0.1]}\n", ["line 2", "`dropout`", "needs [low, high]"]),
    "log not a boolean": ("params:\n  lr: {float: [1.0e-4, 1.0e-2], log: 'yes'}\n",
                          ["line 2", "`lr`", "must be true or false"]),
    # --- choices and values ---
    "empty choice": ("params:\n  loss: {choice: []}\n", ["line 2", "`loss`", "non-empty list"]),
    "choice repeated": ("params:\n  loss: {choice: [ce, ce]}\n", ["line 2", "`loss`", "a value twice"]),
    "choice of a mapping": ("params:\n  loss: {choice: [ce, {name: focal}]}\n",
                            ["line 2", "`loss`", "must be a string or a number"]),
    "unknown registry name": ("params:\n  loss: {choice: [ce, hinge]}\n",
                              ["line 2", "'hinge' is not a known loss", "valid loss names are: ce, dice, focal"]),
    "wrong type in a choice": ("params:\n  rnn: {choice: [none, yes]}\n", ["line 2", "`rnn`", "must be a str"]),
    "spec not a mapping": ("params:\n  lr: 0.001\n", ["line 2", "`lr`", "must be a mapping like"]),
    "two kinds": ("params:\n  lr: {float: [0.001, 0.01], choice: [0.001]}\n",
                  ["line 2", "`lr`", "needs exactly one of"]),
    "unknown option": ("params:\n  lr: {float: [0.001, 0.01], logscale: true}\n",
                       ["line 2", "unknown key 'logscale'", "valid keys are"]),
    # --- names ---
    "unknown searched field": ("params:\n  learning_rate: {float: [0.001, 0.01]}\n",
                               ["line 2", "'learning_rate' is not a TrialConfig field", "valid fields are"]),
    "unknown fixed field": ("fixed: {hidden: 64}\n" + SEARCHED, ["line 1", "'hidden'", "valid fields are"]),
    "unknown top-level key": ("param:\n  lr: {float: [0.001, 0.01]}\n",
                              ["line 1", "unknown top-level key 'param'", "valid keys are"]),
    "unknown fixed encoder": ("fixed: {encoder: gpt2}\n" + SEARCHED, ["line 1", "'gpt2' is not a known encoder"]),
    "fixed value wrong type": ("fixed: {num_layers: two}\n" + SEARCHED, ["line 1", "`num_layers`", "must be a int"]),
    "fixed and searched": ("fixed: {lr: 0.001}\n" + SEARCHED, ["line 3", "'lr' is both fixed and searched; keep one"]),
    "nothing searched": ("fixed: {lr: 0.001}\n", ["declares nothing to search", "add at least one"]),
    "checkpoint encoder without checkpoint": ("fixed: {encoder: bert}\n" + SEARCHED,
                                              ["needs a checkpoint", "--set checkpoint=DIR"]),
    "checkpoint no encoder loads": ("fixed: {checkpoint: /some/vectors}\n" + SEARCHED,
                                    ["`checkpoint` is '/some/vectors'", "(tiny) loads no checkpoint",
                                     "it would be ignored", "--space cpu"]),
    "checkpoint no encoder of the choice loads": (
        "fixed: {checkpoint: /some/vectors}\nparams:\n  encoder: {choice: [tiny]}\n" + SEARCHED[8:],
        ["(tiny) loads no checkpoint"]),
    "fixed values that do not combine": ("fixed: {hidden_size: 64, num_heads: 3}\n" + SEARCHED,
                                         ["line 1", "not divisible by `num_heads` 3"]),
    # --- conditions ---
    "condition on an unknown parameter": (
        "params:\n  focal_gamma: {float: [1.0, 3.0], when: {losss: focal}}\n",
        ["line 2", "`focal_gamma`", "'losss', which is not a parameter", "conditions may name"]),
    "condition on a value never taken": (
        "params:\n  loss: {choice: [ce, dice]}\n  focal_gamma: {float: [1.0, 3.0], when: {loss: focal}}\n",
        ["line 3", "`focal_gamma`", "loss = 'focal'", "can never take"]),
    "condition lists no value": (
        "params:\n  loss: {choice: [ce, focal]}\n  focal_gamma: {float: [1.0, 3.0], when: {loss: []}}\n",
        ["line 3", "`focal_gamma`", "never be active", "list the values of loss"]),
    "condition not a mapping": (
        "params:\n  loss: {choice: [ce, focal]}\n  focal_gamma: {float: [1.0, 3.0], when: focal}\n",
        ["line 3", "`focal_gamma`", "e.g. when: {loss: focal}"]),
    "conditions in a cycle": (
        "params:\n  loss: {choice: [ce, focal], when: {msd_count: 1}}\n  msd_count: {int: [1, 2], when: {loss: ce}}\n",
        ["cycle", "loss -> msd_count -> loss"]),
    # --- warm starts ---
    "warm start outside the range": (SEARCHED + "warm_start:\n  a: {lr: 0.5}\n",
                                     ["line 4", "'a' sets lr = 0.5", "outside its domain"]),
    "warm start sets a fixed field": (SEARCHED + "warm_start:\n  a: {dropout: 0.5}\n",
                                      ["line 4", "'dropout', which is not a searched parameter", "it may set: lr"]),
    "warm start child without parent": (
        "params:\n  loss: {choice: [ce, focal]}\n  focal_gamma: {float: [1.0, 3.0], when: {loss: focal}}\n"
        "warm_start:\n  a: {focal_gamma: 2.0}\n",
        ["line 5", "'focal_gamma' but not its parent(s) loss", "set them too"]),
    "warm start condition false": (
        "params:\n  loss: {choice: [ce, focal]}\n  focal_gamma: {float: [1.0, 3.0], when: {loss: focal}}\n"
        "warm_start:\n  a: {loss: ce, focal_gamma: 2.0}\n",
        ["line 5", "'focal_gamma'", "loss in ['focal'] does not hold"]),
    "warm start not a mapping": (SEARCHED + "warm_start:\n  a: 0.001\n", ["line 4", "must map parameters to values"]),
    # --- the YAML document ---
    "YAML syntax error": ("params:\n  lr: {float: [1.0e-4, 1.0e-2]\n", ["not valid YAML", "line 3"]),
    "repeated key": (SEARCHED + "  lr: {float: [0.001, 0.01]}\n", ["line 3", "key 'lr' repeated (first on line 2)"]),
    "alias bomb": ("a: &a [x, x, x, x, x, x, x, x, x, x]\n"
                   + "".join(f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                             for p, n in zip("abcdefgh", "bcdefghi", strict=True))
                   + SEARCHED,
                   ["aliases (*name) expand to", "more than the 100000", "alias bomb"]),
    "recursive alias": ("a: &a [*a]\n" + SEARCHED, ["line 1", "contains it", "cannot contain itself"]),
    "nested too deep": ("description: " + "[" * 40 + "]" * 40 + "\n" + SEARCHED,
                        ["line 1", "nested more than 32 levels deep"]),
    "oversized file": (SEARCHED + "#" * 1_000_001 + "\n", ["more than the 1000000 a space file may have"]),
    "not a mapping": ("- lr\n- loss\n", ["must be a mapping with keys"]),
    "empty file": ("", ["must be a mapping with keys description, fixed, params, warm_start"]),
    "two documents": (SEARCHED + "---\n" + SEARCHED, ["not valid YAML", "expected a single document"]),
    "python tag": ("description: !!python/object/apply:os.system [echo hi]\n" + SEARCHED,
                   ["not valid YAML", "could not determine a constructor"]),
    "not UTF-8": (b"description: caf\xe9\n" + SEARCHED.encode(), ["not UTF-8", "save the space as UTF-8"]),
    "list as a key": (SEARCHED + "  ? [a, b]\n  : {float: [0.1, 0.2]}\n", ["line 3", "a key must be a name"]),
}

# Rules that need the driver's flags (preflight, launch only): train-one trains one configuration.
LAUNCH_ONLY: dict[str, tuple[str, list[str], list[str]]] = {
    "swa_start after --max-epochs": ("params:\n  swa_start: {int: [0, 5]}\n", ["--max-epochs", "3"],
                                     ["swa_start = 4 (line 2)", "after the last epoch (3)", "lower it or set 0"]),
    "max_epochs searched": ("params:\n  max_epochs: {int: [1, 3]}\n", [],
                            ["`max_epochs` is set for all trials by --max-epochs", "remove it from params"]),
    "seed searched": ("params:\n  seed: {choice: [0, 1]}\n", [], ["`seed`", "--seed", "remove it from params"]),
}


@pytest.fixture(autouse=True)
def nothing_starts(monkeypatch):
    """A case that reaches Ray or training fails: refusals must come first."""
    import ray

    import stages.train_one

    def started(*args, **kwargs):
        raise AssertionError("the bad space was not refused before Ray/training started")

    monkeypatch.setattr(ray, "init", started)
    monkeypatch.setattr(stages.train_one, "fit", started)


def write(tmp_path, content: str | bytes):
    path = tmp_path / "space.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def argv(command: str, path, tmp_path) -> list:
    if command == "launch":
        return ["launch", "--space", path, "--synthetic", "--storage-path", tmp_path / "runs", "--name", "bad"]
    return ["train-one", "--space", path, "--synthetic", "--max-epochs", "1"]


@pytest.mark.parametrize("command", ["launch", "train-one"])
@pytest.mark.parametrize("case", list(CASES))
def test_refused(refused, tmp_path, command, case):
    content, needles = CASES[case]
    path = write(tmp_path, content)
    refused(argv(command, path, tmp_path), [str(path), *needles], watch=(tmp_path,))


@pytest.mark.parametrize("case", list(LAUNCH_ONLY))
def test_refused_by_launch(refused, tmp_path, case):
    content, flags, needles = LAUNCH_ONLY[case]
    path = write(tmp_path, content)
    refused(argv("launch", path, tmp_path) + flags, [str(path), *needles], watch=(tmp_path,))

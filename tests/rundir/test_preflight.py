"""Bad input fails fast, with a message that says the fix, and starts no trial."""

import subprocess
import sys
from dataclasses import replace

import pytest
import ray

from model.config import TrialConfig
from model.errors import ConfigError, DataError
from rundir.preflight import check_resources, check_space
from rundir.settings import Settings
from search.driver import launch
from spaces.space import SpaceError, parse_space
from tests.conftest import write_tiny_bert

TINY_SPACE = "fixed: {hidden_size: 16, num_heads: 2}\nparams:\n  lr: {float: [1.0e-3, 1.0e-2]}\n"
ROWS = "".join(f"{i},{i % 7} 8 9,{1 + i % 2}-{1 + i % 2}\n" for i in range(40))  # 20 rows per label


def data(text):
    """A `--data` directory holding `text` as train.csv."""
    def make(tmp_path):
        (tmp_path / "data").mkdir()
        (tmp_path / "data" / "train.csv").write_text(text)
        return {"data": str(tmp_path / "data")}
    return make


def space(text):
    def make(tmp_path):
        (tmp_path / "bad.yaml").write_text(text)
        return {"space": str(tmp_path / "bad.yaml")}
    return make


def flags(**values):
    return lambda tmp_path: values


def storage_file(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    return {}


CASES = {
    # scheduler and run settings
    "no trials": (flags(num_samples=0), ConfigError, r"--num-samples is 0, but must be >= 1"),
    "grace > budget": (flags(grace_period=5, max_epochs=2), ConfigError,
                       r"--grace-period 5 is larger than the trial budget of 2 epochs"),
    "reduction factor": (flags(reduction_factor=1), ConfigError, r"--reduction-factor is 1, but must be > 1"),
    "zero epochs": (flags(max_epochs=0), ConfigError, r"--max-epochs is 0, but must be >= 1"),
    "zero concurrency": (flags(max_concurrent=0), ConfigError, r"--max-concurrent is 0, but must be >= 1"),
    "negative failures": (flags(max_failures=-1), ConfigError, r"--max-failures is -1, but must be >= 0"),
    "two data sources": (flags(data="x", synthetic=True), ConfigError, r"--data and --synthetic exclude"),
    "nan reduction factor": (flags(reduction_factor=float("nan")), ConfigError,
                             r"--reduction-factor is nan, but must be a finite number"),
    "inf cpus": (flags(cpus_per_trial=float("inf")), ConfigError, r"--cpus-per-trial is inf, but must be a finite"),
    "name a path": (flags(name="../x"), ConfigError, r"--name '../x' is a path, not a name"),
    "name dot": (flags(name="."), ConfigError, r"--name '.' is not a name; pass a plain name"),
    "storage a file": (storage_file, ConfigError, r"--storage-path .*is a file, not a directory"),
    # data
    "missing data": (flags(data="/nonexistent/dir"), DataError, r"does not exist. Pass --data DIR with a train.csv"),
    "missing column": (data("id,text\n1,2 3\n"), DataError, r"missing column\(s\) label"),
    "empty text": (data("id,text,label\n1,2,1-1\n2, ,1-1\n"), DataError, r"line 3 \(id 2\) has an empty text"),
    "bad label": (data("id,text,label\n1,2,1-1\n2,3,x\n"), DataError, r"label 'x', which is not of the form L1-L2"),
    "duplicate id": (data("id,text,label\n1,2,1-1\n1,3,1-1\n"), DataError, r"id '1' appears on lines 2, 3"),
    "rare label": (data("id,text,label\n" + ROWS + "99,5 5,3-18\n"), DataError,
                   r"label\(s\) 3-18 have 1 row each: a label needs at least 2"),
    "fold out of range": (flags(fold=5, synthetic_rows=300), DataError, r"--fold is 5, but must be in 0..4"),
    "tiny synthetic": (flags(synthetic_rows=50), DataError,
                       r"--synthetic-rows is 50, but the synthetic generator needs at least 211 rows"),
    # search space
    "no such space": (flags(space="nope"), SpaceError, r"search space 'nope' not found: pass a YAML file or one"),
    "unknown field": (space("params:\n  lrate: {float: [0.1, 1]}\n"), SpaceError,
                      r"bad.yaml: line 2: parameter 'lrate' is not a TrialConfig field"),
    "low > high": (space("params:\n  lr: {float: [0.1, 0.01]}\n"), SpaceError, r"low 0.1 is greater than high"),
    "log from zero": (space("params:\n  dropout: {float: [0, 0.3], log: true}\n"), SpaceError,
                      r"a log range needs low > 0"),
    "warm start outside": (space("params:\n  lr: {float: [0.01, 0.1]}\nwarm_start:\n  a: {lr: 0.5}\n"),
                           SpaceError, r"line 4: warm-start point 'a' sets lr = 0.5, outside its domain"),
    "searched budget": (space("params:\n  max_epochs: {int: [1, 3]}\n"), SpaceError,
                        r"`max_epochs` is set for all trials by --max-epochs"),
    "bad fixed combo": (space("fixed: {hidden_size: 30, num_heads: 4}\nparams:\n  lr: {float: [0.01, 0.1]}\n"),
                        SpaceError, r"`hidden_size` 30 is not divisible by `num_heads` 4"),
    # resources (these start Ray to see the nodes)
    "too many cpus": (flags(cpus_per_trial=64, synthetic_rows=300), ConfigError,
                      r"--cpus-per-trial is 64, but the largest node has \d+ CPUs"),
    "no gpu": (flags(gpus_per_trial=1, synthetic_rows=300), ConfigError,
               r"--gpus-per-trial is 1, but the largest node has 0 GPUs"),
}


# The resource cases start Ray to see the nodes.
STARTS_RAY = ("too many cpus", "no gpu")


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.ray) if c in STARTS_RAY else c for c in CASES])
def test_bad_input_fails_fast_and_starts_no_trial(tmp_path, case):
    make, error, message = CASES[case]
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    settings = {"space": str(tmp_path / "space.yaml"), "storage_path": str(tmp_path / "runs"), "name": "x",
                **make(tmp_path)}
    ray_was_up = ray.is_initialized()  # another test module's Ray may be up
    with pytest.raises(error, match=message):
        launch(Settings(**settings), out=lambda _: None)
    assert ray.is_initialized() == ray_was_up  # a Ray started for the checks is stopped again
    assert not (tmp_path / "runs" / "x").exists()  # no run directory, so no trial


@pytest.mark.parametrize("started, message", [
    (True, r"already exists: resume it with `python -m search resume .*taken`"),
    (False, r"already exists but holds no started search .*pick another --name, or delete it \(rm -r .*taken\)"),
])
def test_existing_run_dir_is_not_overwritten(tmp_path, started, message):
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    (tmp_path / "taken" / "ray").mkdir(parents=True)
    if started:  # Ray's experiment saved its state: a run that resume continues
        (tmp_path / "taken" / "ray" / "experiment_state-2026.json").write_text("{}")
    with pytest.raises(ConfigError, match=message):
        launch(Settings(space=str(tmp_path / "space.yaml"), storage_path=str(tmp_path), name="taken"),
               out=lambda _: None)
    assert (tmp_path / "taken" / "ray").is_dir()


@pytest.mark.parametrize("cpus, gpus, message", [(4, 0, r"largest node has 2 CPUs"), (1, 1, r"has 0 GPUs")])
def test_resources_ignore_dead_nodes(cpus, gpus, message):
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 1}}]
    with pytest.raises(ConfigError, match=message):
        check_resources(cpus_per_trial=cpus, gpus_per_trial=gpus, nodes=nodes)


def test_gpus_left_unused_by_gpus_per_trial_0_are_noted():
    nodes = [{"Alive": True, "Resources": {"CPU": 16.0, "GPU": 2.0}}, {"Alive": True, "Resources": {"CPU": 8.0}},
             {"Alive": False, "Resources": {"CPU": 8.0, "GPU": 4.0}}]
    note = check_resources(cpus_per_trial=2, gpus_per_trial=0, nodes=nodes)
    assert note.startswith("note: the cluster has 2 GPU(s), but --gpus-per-trial is 0: every trial trains on the CPU")
    assert "--gpus-per-trial 1" in note
    assert check_resources(cpus_per_trial=2, gpus_per_trial=0.5, nodes=nodes) is None
    assert check_resources(cpus_per_trial=2, gpus_per_trial=0, nodes=nodes[1:]) is None  # no live GPU


@pytest.mark.slow
def test_cli_prints_the_error_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search", "launch", "--max-epochs", "2", "--grace-period", "3",
         "--storage-path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: --grace-period 3 is larger than the trial budget of 2 epochs" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_encoder_choice_must_load(tmp_path):
    (tmp_path / "s.yaml").write_text("params:\n  encoder: {choice: [tiny, nezha]}\n  lr: {float: [0.001, 0.01]}\n")
    with pytest.raises(SpaceError, match=r"trials with encoder = 'nezha' \(line 2\) cannot run: `checkpoint` is ''"):
        launch(Settings(space=str(tmp_path / "s.yaml"), storage_path=str(tmp_path)), out=lambda _: None)


def fake_checkpoint(directory):
    """A real tiny BERT checkpoint directory: preflight reads its config, weights' header and vocab.txt."""
    return str(write_tiny_bert(directory))


MISSING = (r"`checkpoint` is '/does/not/exist', but encoder 'bert' loads a local checkpoint: "
           r"that directory does not exist")
CHECKPOINT_SPACES = {
    "fixed": ("fixed: {encoder: bert, checkpoint: /does/not/exist}\nparams:\n  lr: {float: [0.001, 0.01]}\n",
              r"trials with the fixed encoder and checkpoint cannot run: " + MISSING),
    "choice": ("params:\n  encoder: {choice: [bert]}\n  checkpoint: {choice: [GOOD, /does/not/exist]}\n",
               r"trials with encoder = 'bert', checkpoint = '/does/not/exist' cannot run: " + MISSING),
    "encoder choice": ("fixed: {checkpoint: /does/not/exist}\nparams:\n  encoder: {choice: [tiny, bert]}\n",
                       r"trials with encoder = 'bert' cannot run: " + MISSING),
    "conditional": ("params:\n  encoder: {choice: [tiny, bert]}\n"
                    "  checkpoint: {choice: [GOOD, /does/not/exist], when: {encoder: bert}}\n",
                    r"trials with encoder = 'bert', checkpoint = '/does/not/exist' cannot run: " + MISSING),
    "inactive checkpoint": ("params:\n  encoder: {choice: [bert, nezha]}\n"
                            "  checkpoint: {choice: [GOOD], when: {encoder: bert}}\n",
                            r"trials with encoder = 'nezha' \(line 2\) cannot run: `checkpoint` is '', but encoder "
                            r"'nezha'"),  # refused as the space is read (`check_combinations`)
    "incomplete": ("fixed: {encoder: bert, checkpoint: EMPTY}\nparams:\n  lr: {float: [0.001, 0.01]}\n",
                   r"trials with the fixed encoder and checkpoint cannot run: `checkpoint` is '.*empty', but "
                   r"encoder 'bert' loads a local checkpoint: .*empty has no vocab.txt, config.json or "
                   r"bert_config.json, model.safetensors or pytorch_model.bin"),
}


@pytest.mark.parametrize("case", list(CHECKPOINT_SPACES))
def test_preflight_checks_every_checkpoint_the_space_can_produce(tmp_path, case):
    good, empty = fake_checkpoint(tmp_path / "good"), tmp_path / "empty"
    empty.mkdir()
    text, message = CHECKPOINT_SPACES[case]
    with pytest.raises(SpaceError, match=r"s.yaml: " + message):
        space = parse_space(text.replace("GOOD", good).replace("EMPTY", str(empty)), source="s.yaml")
        check_space(space, {"max_epochs": 1, "seed": 0})


def test_preflight_checks_the_checkpoints_of_warm_starts(tmp_path):
    # A warm-start point lies inside the space, so its checkpoint is also one of the choices; it
    # is still checked in its own right, and the message names the point.
    good = fake_checkpoint(tmp_path / "good")
    text = (f"params:\n  encoder: {{choice: [bert]}}\n  checkpoint: {{choice: [{good}, /does/not/exist]}}\n"
            "warm_start:\n  published: {checkpoint: /does/not/exist}\n")
    space = parse_space(text, source="s.yaml")
    with pytest.raises(SpaceError, match=r"trials with encoder = 'bert', checkpoint = '/does/not/exist' cannot run"):
        check_space(space, {})
    only_good = tuple(replace(p, choices=(good,)) if p.name == "checkpoint" else p for p in space.params)
    space = replace(space, params=only_good)  # now only the warm-start point names the missing directory
    with pytest.raises(SpaceError, match=r"warm-start point 'published' \(encoder = 'bert', checkpoint = "
                                         r"'/does/not/exist'\) cannot run: " + MISSING):
        check_space(space, {})


def test_preflight_accepts_spaces_whose_checkpoints_are_there(tmp_path):
    good = fake_checkpoint(tmp_path / "good")
    text = (f"params:\n  encoder: {{choice: [tiny, bert, nezha]}}\n  checkpoint: {{choice: [{good}]}}\n"
            f"warm_start:\n  a: {{encoder: nezha, checkpoint: {good}}}\n")
    check_space(parse_space(text), {"max_epochs": 1, "seed": 0})


def test_a_config_naming_a_missing_checkpoint_builds_but_preflight_refuses_it():
    cfg = TrialConfig(encoder="bert", checkpoint="/does/not/exist")  # no I/O: rebuilds on any machine
    space = parse_space("params:\n  lr: {float: [0.001, 0.01]}\n", source="s.yaml")
    space = replace(space, fixed=cfg.to_dict())
    with pytest.raises(SpaceError, match=MISSING + r" \(on a cluster, every node must see it\)"):
        check_space(space, {})


@pytest.fixture
def no_ray(monkeypatch):
    """launch without starting Ray: its session and node checks are no-ops (the run sets --max-concurrent)."""
    import contextlib

    import search.driver as driver

    monkeypatch.setattr(driver, "ray_session", lambda address: contextlib.nullcontext())
    monkeypatch.setattr(driver.ray, "nodes", lambda: [])
    monkeypatch.setattr(driver.preflight, "check_resources", lambda **kwargs: None)
    return driver


@pytest.mark.parametrize("started", [False, True])
def test_a_launch_failing_before_its_first_trial_leaves_no_run_dir(tmp_path, monkeypatch, no_ray, started):
    """A failure between creating RUN_DIR and Ray's first experiment state removes RUN_DIR (the
    launch can simply be repeated); once Ray has saved its state, RUN_DIR stays for `resume`."""
    def fail(space, *, storage, study_name, seed, **kwargs):
        if started:
            (tmp_path / "runs" / "x" / "ray").mkdir()
            (tmp_path / "runs" / "x" / "ray" / "experiment_state-2026.json").write_text("{}")
        raise RuntimeError("injected")

    monkeypatch.setattr(no_ray, "FidelityAwareOptunaSearch", fail)
    (tmp_path / "space.yaml").write_text(TINY_SPACE)
    settings = Settings(space=str(tmp_path / "space.yaml"), storage_path=str(tmp_path / "runs"), name="x",
                        synthetic_rows=300, max_concurrent=1)
    with pytest.raises(RuntimeError, match="injected"):
        launch(settings, out=lambda _: None)
    assert (tmp_path / "runs" / "x").exists() == started
    assert (tmp_path / "runs").is_dir()  # the storage path itself is not ours to remove

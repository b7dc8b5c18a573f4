"""Bad input fails before Ray starts, with a message that says the fix."""

import subprocess
import sys

import pytest
import ray

from model.errors import ConfigError, DataError
from search.driver import Settings, launch
from search.preflight import check_resources
from spaces.space import SpaceError

TINY_SPACE = "fixed: {hidden_size: 16, num_heads: 2}\nparams:\n  lr: {float: [1.0e-3, 1.0e-2]}\n"


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(TINY_SPACE)
    return str(path)


@pytest.mark.parametrize(
    "settings, error, message",
    [
        (dict(num_samples=0), ConfigError, r"--num-samples is 0, but must be >= 1"),
        (dict(grace_period=5, max_epochs=2), ConfigError, r"--grace-period 5 is larger than the trial budget of 2"),
        (dict(reduction_factor=1), ConfigError, r"--reduction-factor is 1, but must be > 1"),
        (dict(cpus_per_trial=0), ConfigError, r"--cpus-per-trial is 0, but must be > 0"),
        (dict(max_concurrent=0), ConfigError, r"--max-concurrent is 0"),
        (dict(max_epochs=0), ConfigError, r"--max-epochs is 0, but must be >= 1"),
        (dict(data="x", synthetic=True), ConfigError, r"--data and --synthetic exclude each other"),
        (dict(space="nope"), SpaceError, r"search space 'nope' not found"),
        (dict(folds=5, fold=7, synthetic_rows=300), DataError, r"--fold is 7, but must be in 0..4"),
        (dict(synthetic_rows=50), DataError, r"--rows is 50, but the synthetic generator needs at least 211"),
    ],
)
def test_bad_settings_fail_fast_without_starting_ray(tmp_path, space_file, settings, error, message):
    settings = {"space": space_file, "storage_path": str(tmp_path / "runs"), "name": "x", **settings}
    with pytest.raises(error, match=message):
        launch(Settings(**settings), out=lambda _: None)
    assert not ray.is_initialized()
    assert not (tmp_path / "runs" / "x").exists()


def test_searching_a_driver_field_is_rejected(tmp_path):
    space = tmp_path / "s.yaml"
    space.write_text("params:\n  max_epochs: {int: [1, 3]}\n")
    with pytest.raises(SpaceError, match=r"`max_epochs` is set for all trials by --max-epochs"):
        launch(Settings(space=str(space), storage_path=str(tmp_path)), out=lambda _: None)


def test_missing_data_dir(tmp_path, space_file):
    with pytest.raises(DataError, match=r"does not exist. Pass --data DIR"):
        launch(Settings(space=space_file, data=str(tmp_path / "none"), storage_path=str(tmp_path)),
               out=lambda _: None)


def test_existing_run_dir_is_not_overwritten(tmp_path, space_file):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ConfigError, match=r"already exists: pick another --name"):
        launch(Settings(space=space_file, storage_path=str(tmp_path), name="taken"), out=lambda _: None)


@pytest.mark.parametrize("cpus, gpus, message", [(4, 0, r"largest node has 2 CPUs"), (1, 1, r"has 0 GPUs")])
def test_resources_no_node_can_hold(cpus, gpus, message):
    nodes = [{"Alive": True, "Resources": {"CPU": 2.0}}, {"Alive": False, "Resources": {"CPU": 8.0}}]
    with pytest.raises(ConfigError, match=message):
        check_resources(cpus_per_trial=cpus, gpus_per_trial=gpus, nodes=nodes)


def test_cli_prints_the_error_and_exits_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "search", "launch", "--max-epochs", "2", "--grace-period", "3",
         "--storage-path", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: --grace-period 3 is larger than the trial budget of 2 epochs" in proc.stderr
    assert "Traceback" not in proc.stderr

"""`launch --set KEY=VALUE` and spaces/pretrained.yaml: the sets reach Settings and run.json, override
`fixed`, are refused for searched or unknown fields, complete the stored space on resume and the
leaderboard's train-one command; the pretrained space validates given a checkpoint and names the fix
without one. No Ray is started here."""

import dataclasses
import json
import re
import shlex

import optuna
import pytest

from cli import base, search_commands
from cli import main as cli
from model.config import TrialConfig
from rundir.inputs import space_of
from rundir.paths import RunFiles
from rundir.preflight import check_space
from rundir.settings import Settings, command_prefix
from search.driver import _stored_space
from spaces.space import SPACES_DIR, SpaceError, load_space, parse_space
from stages.train_one import parse_sets, resolve_config
from tests.conftest import own_err, write_tiny_bert

SPACE = "fixed: {dropout: 0.1, max_epochs: 2}\nparams:\n  lr: {float: [0.001, 0.01], log: true}\n"


def fake_checkpoint(directory):
    """A real tiny BERT checkpoint directory: preflight reads its config, weights' header and vocab.txt."""
    return write_tiny_bert(directory)


@pytest.fixture
def space_file(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def test_launch_sets_are_settings_and_survive_run_json():
    args = cli.build_parser().parse_args(["launch", "--set", "checkpoint=ckpt/bert", "--set", "dropout=0.3"])
    settings = Settings.from_namespace(args)
    assert settings.sets == ("checkpoint=ckpt/bert", "dropout=0.3")
    stored = json.loads(json.dumps(dataclasses.asdict(settings)))  # run.json's "settings"
    assert stored["sets"] == ["checkpoint=ckpt/bert", "dropout=0.3"] and Settings(**stored) == settings


def test_a_set_overrides_a_fixed_value_and_adds_new_ones(space_file):
    space = space_of(Settings(space=str(space_file), sets=("dropout=0.3", "loss=focal", "focal_gamma=1")))
    assert space.fixed == {"dropout": 0.3, "max_epochs": 2, "loss": "focal", "focal_gamma": 1.0}
    cfg = space.config({"lr": 0.005})
    assert (cfg.dropout, cfg.loss, cfg.focal_gamma, cfg.lr) == (0.3, "focal", 1.0, 0.005)
    assert space.searched == ["lr"]


@pytest.mark.parametrize("item, message", [
    ("lr=0.1", r"--set lr=\.\.\.: .*space.yaml searches lr \(under `params`\), and --set only fixes fields a space "
               r"does not search; drop the --set, or copy the space and move lr from `params` to `fixed` there"),
    ("lrate=0.1", r"--set names unknown field\(s\) lrate; valid fields are: encoder, "),
    ("dropout=1.5", r"--set dropout=1.5: `dropout` is 1.5, but must be < 1"),
    ("dropout=high", r"--set dropout=high: `dropout` takes a number \(float\)"),
    ("seed=3", r"--set seed=\.\.\.: `seed` is set for all trials by --seed; pass --seed instead"),
    ("max_epochs=3", r"pass --max-epochs instead"),
])
def test_bad_sets_fail_before_ray_with_exit_2(space_file, tmp_path, capsys, item, message):
    argv = ["launch", "--space", str(space_file), "--set", item, "--storage-path", str(tmp_path / "runs"),
            "--synthetic-rows", "300"]
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == base.EXIT_USAGE
    err = own_err(capsys)
    assert err.startswith("error: ")

    assert re.search(message, err), err
    assert not (tmp_path / "runs").exists()


def test_the_reproduce_command_carries_the_sets_and_rebuilds_the_config(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "my ckpt")
    stored = tmp_path / "run" / "space.yaml"
    stored.parent.mkdir()
    stored.write_text((SPACES_DIR / "pretrained.yaml").read_text())
    settings = Settings(space="pretrained", sets=(f"checkpoint={ckpt}", "batch_size=16"))
    prefix = command_prefix(settings, space_path=stored, max_epochs=2)
    assert f"--set 'checkpoint={ckpt}' --set batch_size=16" in prefix
    # a leaderboard row appends the trial's sampled values
    args = cli.build_parser().parse_args(shlex.split(prefix + " --set lr=3e-05 --set loss=focal")[3:])
    assert args.func is search_commands.cmd_train_one
    sets = parse_sets(args.sets)
    space = load_space(args.space, sets=sets, skip_searched=True)  # what train_one loads
    cfg = resolve_config(space, point=None, sets=sets, max_epochs=args.max_epochs, seed=0)
    assert (cfg.encoder, cfg.checkpoint, cfg.batch_size, cfg.lr, cfg.loss, cfg.max_epochs) == \
        ("bert", str(ckpt), 16, 3e-05, "focal", 2)


def test_resume_applies_the_runs_sets_to_the_stored_space(tmp_path):
    files = RunFiles(tmp_path / "run")
    files.root.mkdir()
    files.space_yaml.write_text((SPACES_DIR / "pretrained.yaml").read_text())
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    settings = Settings(space="pretrained", sets=(f"checkpoint={ckpt}",), max_epochs=4)
    space = _stored_space(files, settings, out=lambda line: None)
    assert space.fixed["checkpoint"] == str(ckpt)
    with pytest.raises(Exception, match=r"needs a checkpoint .*pass --set checkpoint=DIR"):
        _stored_space(files, dataclasses.replace(settings, sets=()), out=lambda line: None)


# ----------------------------------------------------------------------------- spaces/pretrained.yaml


def test_the_pretrained_space_without_a_checkpoint_names_the_fix(tmp_path, capsys):
    with pytest.raises(SpaceError, match=r"pretrained.yaml needs a checkpoint for encoder 'bert': pass --set "
                                         r"checkpoint=DIR \(a directory written by `python -m search pretrain`"):
        load_space("pretrained")
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["launch", "--space", "pretrained", "--storage-path", str(tmp_path / "runs")])
    assert exit_info.value.code == base.EXIT_USAGE
    assert "pass --set checkpoint=DIR" in capsys.readouterr().err


def test_a_fixed_checkpoint_encoder_may_search_its_checkpoint(tmp_path):
    good = fake_checkpoint(tmp_path / "good")
    text = ("fixed: {encoder: bert}\nparams:\n  checkpoint: {choice: [%s, %s]}\n  lr: {float: [1.0e-5, 1.0e-4]}\n")
    space = parse_space(text % (good, fake_checkpoint(tmp_path / "also-good")), source="s.yaml")
    check_space(space, {"max_epochs": 4, "seed": 0})  # every choice is a valid config with the fixed encoder
    with pytest.raises(SpaceError, match=r"checkpoint = '.*/missing' cannot run: `checkpoint` is '.*/missing', but"):
        check_space(parse_space(text % (good, tmp_path / "missing"), source="s.yaml"), {"max_epochs": 4, "seed": 0})


def test_the_pretrained_space_refuses_a_missing_checkpoint_directory(tmp_path):
    space = load_space("pretrained", sets={"checkpoint": str(tmp_path / "nope")})
    with pytest.raises(SpaceError, match=r"that directory does not exist"):
        check_space(space, {"max_epochs": 4, "seed": 0})


def test_every_config_of_the_pretrained_space_validates_given_a_checkpoint(tmp_path):
    ckpt = fake_checkpoint(tmp_path / "ckpt")
    space = load_space("pretrained", sets={"checkpoint": str(ckpt)})
    check_space(space, {"max_epochs": 4, "seed": 0})  # preflight: warm starts and the checkpoint
    assert space.fixed["encoder"] == "bert" and space.fixed["max_epochs"] == 4
    assert {"winner_dice_supcon_routing", "winner_ce_supcon_fgm"} <= set(space.warm_start)
    lr = next(p for p in space.params if p.name == "lr")
    head_lr = next(p for p in space.params if p.name == "head_lr")
    # (up to 5e-4: a small encoder pretrained on the task fine-tuned best at 3e-4, README)
    assert lr.log and 5e-6 <= lr.low <= 2e-5 and 1e-4 <= lr.high <= 5e-4  # fine-tuning rates
    assert head_lr.log and head_lr.low >= lr.low * 5
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(200):
        trial = study.ask()
        cfg = space.config(space.with_constants(space.sample(trial)))
        assert isinstance(cfg, TrialConfig) and cfg.checkpoint == str(ckpt)
        seen.add((cfg.loss, cfg.adversarial, cfg.contrastive))
        study.tell(trial, 0.0)
    assert len(seen) >= 10  # the conditional branches are all reachable
    for point in space.warm_start.values():
        space.config(space.with_constants(point))

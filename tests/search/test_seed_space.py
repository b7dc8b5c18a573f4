"""The shipped competition space runs on 2 CPUs: warm-start points first, every trick tried."""

import pytest

from model.poolers import POOLERS
from rundir.settings import Settings
from search.driver import launch
from spaces.space import load_space

pytestmark = pytest.mark.ray


def test_seed_space_runs_every_trick(tmp_path, local_ray):
    space = load_space("seed")
    settings = Settings(space="seed", synthetic_rows=600, max_seq_len=32, folds=3, max_epochs=1, grace_period=1,
                        num_samples=len(space.warm_start) + 1, storage_path=str(tmp_path), name="seed")
    _, frame = launch(settings, out=lambda _: None)
    assert set(frame["status"]) == {"completed"}
    first = frame.sort_values("optuna_number").head(len(space.warm_start))
    assert first["warm_start"].tolist() == list(space.warm_start)  # warm-start points ran first
    p = {name.removeprefix("param."): frame[name] for name in frame.columns if name.startswith("param.")}
    assert {"ce", "focal", "dice"} <= set(p["loss"])
    assert {"ntxent", "supcon"} <= set(p["contrastive"]) and "samples+classes" in set(p["contrastive_target"])
    assert {"fgm", "pgd"} <= set(p["adversarial"]) and {"lstm", "gru", "lstm_gru"} <= set(p["rnn"])
    assert (p["msd_count"] > 1).any() and (p["flood_b"] > 0).any() and (p["aux_level1_weight"] > 0).any()
    assert "weighted" in set(p["sampler"]) and "sqrt_inverse" in set(p["class_weights"])
    used = {name for combo in p["pooler"] for name in combo.split("+")}
    assert used == set(POOLERS)

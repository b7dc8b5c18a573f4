"""A search, and a data-parallel pretraining, on a simulated multi-node cluster: head + 2 worker nodes,
each 1 CPU and a logical GPU."""

import itertools
import json
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml
from ray.cluster_utils import Cluster

from cli import main as cli
from model.errors import ConfigError
from model.synthetic import synthesize
from rundir.io import read_json
from rundir.settings import Settings
from search import cluster as cluster_module
from search.cluster import REPO_ROOT
from search.driver import launch, resume
from tests.search.test_launch import SPACE
from tests.stages.test_pretrain import TINY

NUM_SAMPLES = 6


@pytest.fixture(scope="module")
def simulated(tmp_path_factory):
    ray.shutdown()
    nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    workers = [nodes.add_node(num_cpus=1, num_gpus=1) for _ in range(2)]
    nodes.wait_for_nodes()
    yield nodes, {w.node_id for w in workers}, tmp_path_factory.mktemp("cluster")
    ray.shutdown()
    nodes.shutdown()


@pytest.fixture(scope="module")
def search_on_cluster(simulated):
    nodes, worker_ids, root = simulated
    (root / "space.yaml").write_text(SPACE)
    settings = Settings(space=str(root / "space.yaml"), synthetic_rows=600, max_seq_len=32, folds=3,
                        num_samples=NUM_SAMPLES, max_epochs=2, grace_period=2, address=nodes.address,
                        cpus_per_trial=0.5, gpus_per_trial=0.5, storage_path=str(root / "shared"), name="c")
    try:
        files, frame = launch(settings, out=lambda _: None)
    finally:
        ray.shutdown()  # launch joined the cluster itself; leave it for the next connection
    return files, frame, worker_ids


@pytest.mark.ray
def test_trials_ran_on_both_workers_at_most_two_per_gpu(search_on_cluster):
    files, frame, worker_ids = search_on_cluster
    records = read_json(files.trials_json)
    assert len(records) == NUM_SAMPLES and {r["status"] for r in records} == {"completed"}
    assert {r["node_id"] for r in records} == worker_ids  # both workers, never the (0-CPU) head
    assert set(frame["device"]) == {"cpu"}  # a logical GPU without CUDA: the trial falls back to CPU
    # at any moment, at most 2 trials (0.5 GPU each) on one node's single GPU
    events = sorted(itertools.chain.from_iterable(
        [(r["started_at"], 1, r["node_id"]), (r["ended_at"], -1, r["node_id"])] for r in records))
    running = dict.fromkeys(worker_ids, 0)
    peak = 0
    for _, step, node in events:
        running[node] += step
        peak = max(peak, running[node])
    assert peak == 2  # packed: two trials shared a GPU


@pytest.mark.ray
def test_results_landed_in_the_shared_storage(search_on_cluster):
    files, frame, _ = search_on_cluster
    assert files.root == files.root.parent / "c" and files.root.parent.name == "shared"
    assert list(files.ray_dir.glob("experiment_state-*.json"))
    for row in frame.itertuples():
        assert (files.ray_dir / f"trial_{row.trial_id}" / "progress.csv").exists()
        assert str(files.root) in row.checkpoint


@pytest.mark.ray
def test_pretraining_runs_one_worker_on_each_node_and_checkpoints_to_the_shared_storage(simulated, tmp_path):
    nodes, _, root = simulated
    train, _ = synthesize(300, seed=1)
    train.to_csv(tmp_path / "train.csv", index=False)
    storage = root / "shared" / "pretrain"
    out = tmp_path / "ckpt"
    # The head has no CPU and each worker node one: the two 1-CPU workers can only run one per node.
    cli.main(["pretrain", "--corpus", str(tmp_path / "train.csv"), "--out", str(out), *TINY, "--steps", "4",
              "--save-every", "2", "--address", nodes.address, "--num-workers", "2", "--cpus-per-worker", "1",
              "--storage-path", str(storage)])
    record = json.loads((out / "pretrain.json").read_text())
    assert record["workers"] == 2 and record["steps"] == 4 and record["finished"]
    assert (storage / "pretrain" / "step-0000004" / "state.pt").is_file()
    assert {"config.json", "model.safetensors", "vocab.txt"} <= {p.name for p in out.iterdir()}


@pytest.mark.ray
def test_storage_not_visible_from_every_node_is_refused(simulated, monkeypatch, tmp_path, capsys):
    nodes, _, _ = simulated
    ray.init(address=nodes.address)
    try:
        # Simulate one worker with its own disk: its answer about the marker file is "not there".
        real = cluster_module.nodes_seeing
        monkeypatch.setattr(cluster_module, "nodes_seeing",
                            lambda path, alive, **kw: {k: i == 0 for i, k in enumerate(real(path, alive, **kw))})
        with pytest.raises(ConfigError, match=r"--storage-path .* is not shared: node\(s\) .* cannot see it"):
            cluster_module.check_shared_storage(str(tmp_path / "local"), ray.nodes())
        cluster_module.check_shared_storage("s3://bucket/runs", ray.nodes())  # URIs are shared by nature
    finally:
        ray.shutdown()
    # pretrain checks its --storage-path the same way, before any worker starts
    train, _ = synthesize(300, seed=1)
    train.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "--corpus", str(tmp_path / "train.csv"), "--out", str(tmp_path / "ckpt"), *TINY,
                  "--steps", "2", "--address", nodes.address, "--num-workers", "2",
                  "--storage-path", str(tmp_path / "local")])
    assert exit_.value.code == 2 and "is not shared" in capsys.readouterr().err
    assert not ray.is_initialized() and not (tmp_path / "local" / "pretrain").exists()


@pytest.mark.ray
def test_uri_storage_keeps_run_files_local_and_resumes(tmp_path, monkeypatch):
    ray.shutdown()
    monkeypatch.chdir(tmp_path)  # run files of a URI storage go to ./runs/<name>
    (tmp_path / "space.yaml").write_text(SPACE)
    uri = f"file://{tmp_path / 'bucket'}"
    settings = Settings(space=str(tmp_path / "space.yaml"), synthetic_rows=400, max_seq_len=32, folds=3,
                        num_samples=2, max_epochs=1, grace_period=1, storage_path=uri, name="u")
    files, frame = launch(settings, out=lambda _: None)
    assert files.root == Path("runs") / "u" and files.leaderboard_csv.exists() and files.study_db.exists()
    assert list((tmp_path / "bucket" / "u").glob("experiment_state-*.json"))  # Ray's side is in the URI
    assert read_json(files.run_json)["ray_experiment"] == f"{uri}/u"
    files, frame = resume(files.root, num_samples=3, out=lambda _: None)
    assert len(frame) == 3 and set(frame["status"]) == {"completed"}


def test_example_cluster_config_is_valid_for_ray_up():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((REPO_ROOT / "cluster" / "aws-gpu.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}


SHIPPED = ["README.md", "model/data.py", "results/report.py", "search/cluster.py", "spaces/demo.yaml"]
NOT_SHIPPED = [".git/HEAD", ".pytest_cache/v/cache/lastfailed", ".ruff_cache/0.1/x", ".venv/bin/python",
               ".venv-ci/lib/site.py", "data/train.csv", "model/__pycache__/data.cpython-311.pyc", "results/old.db",
               "runs/e2e/leaderboard.csv", "runs/e2e/ray/trial_1/checkpoint/state.pt", "study.db"]


@pytest.mark.ray
def test_code_shipped_to_workers_leaves_out_outputs_data_and_environments(simulated, monkeypatch, tmp_path):
    assert cluster_module.code_runtime_env()["working_dir"] == str(REPO_ROOT)
    # A checkout with a file in every place the excludes cover.
    for name in SHIPPED + NOT_SHIPPED:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    monkeypatch.setattr(cluster_module, "REPO_ROOT", tmp_path)

    @ray.remote(num_cpus=1)  # the head has no CPU: this runs on a worker node
    def files_on_the_worker():
        root = Path.cwd()  # Ray runs the task in its unpacked copy of the working_dir
        return ray.get_runtime_context().get_node_id(), sorted(
            str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    nodes, worker_ids, _ = simulated
    assert cluster_module.connect(nodes.address)  # joins with the code as the job's working_dir
    try:
        node, files = ray.get(files_on_the_worker.remote(), timeout=120)
    finally:
        ray.shutdown()
    assert node in worker_ids
    assert files == SHIPPED


@ray.remote(num_cpus=0)
def _worker_env(name: str) -> str | None:
    import os

    return os.environ.get(name)


@pytest.mark.ray
def test_workers_get_the_time_to_end_a_trial_before_taking_the_next(simulated):
    # Tune's 2 s default made a loaded node's warm worker fail its reuse and lose the next trial.
    nodes, _, _ = simulated
    ray.shutdown()
    assert cluster_module.connect(nodes.address)
    try:
        seen = ray.get(_worker_env.remote("TUNE_FUNCTION_THREAD_TIMEOUT_S"))
    finally:
        ray.shutdown()
    assert seen == cluster_module.WORKER_ENV["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "120"

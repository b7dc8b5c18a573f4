"""Trackers users already run see a search: `--track mlflow` read back through MLflow's own client,
and the study read through optuna-dashboard's own web API (both optional dependencies, pinned in
requirements-dev.txt)."""

from __future__ import annotations

import io
import json
import sys

import pytest

from cli.main import main
from model import metrics as M
from rundir.paths import RunFiles
from rundir.trials import load_records
from tests.conftest import E2E_SPACE

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    root = tmp_path_factory.mktemp("tracked")
    (root / "space.yaml").write_text(E2E_SPACE)
    argv = ["--synthetic-rows", "400", "--max-seq-len", "32", "--storage-path", str(root), "--name", "t"]
    with _no_exit():
        main(["launch", "--space", str(root / "space.yaml"), "--num-samples", "3", "--max-epochs", "2",
              "--grace-period", "2", "--track", "mlflow", *argv])
    with _no_exit():
        main(["confirm", str(root / "t"), "--top", "1", "--folds", "2", "--no-linear"])
    return RunFiles(root / "t")


class _no_exit:
    """The commands exit only on trouble; a SystemExit(0) is fine too."""

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is SystemExit and value.code in (0, None)


def test_every_trial_is_a_child_run_with_its_params_metrics_and_end(tracked):
    from mlflow.tracking import MlflowClient

    state = json.loads((tracked.root / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=state["uri"])
    parent = client.get_run(state["runs"]["search"])
    assert parent.data.tags["mlflow.runName"] == "t" and parent.info.status == "FINISHED"  # the search ended
    records = load_records(tracked)
    for trial_id, record in records.items():
        run = client.get_run(state["runs"][f"trial/{trial_id}"])
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {k: float(v) for k, v in run.data.params.items() if k == "lr"} == {"lr": record.params["lr"]}
        history = client.get_metric_history(run.info.run_id, M.LEVEL2_MACRO_F1)
        assert [h.value for h in history] == pytest.approx([h[M.LEVEL2_MACRO_F1] for h in record.history])
        assert run.data.tags["status"] == record.status
        assert run.info.status == {"completed": "FINISHED", "pruned": "KILLED"}[record.status]


def test_confirm_jobs_are_grouped_by_member_with_fold_tags(tracked):
    from mlflow.tracking import MlflowClient

    state = json.loads((tracked.root / "tracking.json").read_text())
    client = MlflowClient(tracking_uri=state["uri"])
    members = [key for key in state["runs"] if key.startswith("member/")]
    assert len(members) == 1
    member = client.get_run(state["runs"][members[0]])
    assert member.data.tags["mlflow.parentRunId"] == state["runs"]["search"]
    jobs = [client.get_run(run_id) for key, run_id in state["runs"].items() if key.startswith("job/")]
    assert sorted(run.data.tags["fold"] for run in jobs) == ["0", "1"]
    assert all(run.data.tags["mlflow.parentRunId"] == member.info.run_id and run.info.status == "FINISHED"
               for run in jobs)


def test_confirm_force_gives_the_new_stage_new_runs(tmp_path):
    from search.tracking import forget_confirm_runs

    runs = {"search": "a", "trial/x": "b", "member/trial-0": "c", "job/trial-0/fold0/seed0": "d"}
    (tmp_path / "tracking.json").write_text(json.dumps({"runs": runs, "uri": "sqlite:///m.db", "experiment": "e"}))
    forget_confirm_runs(tmp_path)
    assert json.loads((tmp_path / "tracking.json").read_text()) == {
        "runs": {"search": "a", "trial/x": "b"}, "uri": "sqlite:///m.db", "experiment": "e"}


def test_optuna_dashboard_reads_every_trial_with_its_intermediate_values(tracked):
    from optuna_dashboard import wsgi

    app = wsgi(tracked.study_url)

    def get(path: str) -> dict:
        status = []
        environ = {"REQUEST_METHOD": "GET", "PATH_INFO": path, "SERVER_NAME": "test", "SERVER_PORT": "80",
                   "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http"}
        body = b"".join(app(environ, lambda s, headers, *rest: status.append(s)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    (study,) = get("/api/studies")["study_summaries"]
    trials = get(f"/api/studies/{study['study_id']}")["trials"]
    records = {r.optuna_number: r for r in load_records(tracked).values()}
    assert {t["number"] for t in trials} >= set(records)
    for trial in trials:
        record = records.get(trial["number"])
        if record is not None:
            values = [v["value"] for v in sorted(trial["intermediate_values"], key=lambda v: v["step"])]
            assert values == pytest.approx([h[M.LEVEL2_MACRO_F1] for h in record.history])

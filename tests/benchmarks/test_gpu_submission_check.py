"""The GPU submission-path check (benchmarks/gpu_submission_check.py): its verdicts, and the whole
script end to end on the CPU, so it runs as written when a GPU machine is lent."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from benchmarks import gpu_submission_check as G
from rundir import keys as K


def job(member, device, *, status="completed", peak=None):
    return {"member": member, "status": status, K.DEVICE: device, K.GPU_MEM_PEAK_GB: peak}


def test_network_jobs_must_all_complete_on_the_device_the_linear_member_aside():
    on_gpu = {"trial-0/fold0/seed0": job("trial-0", "cuda:0", peak=3.2),
              "trial-0/fold1/seed0": job("trial-0", "cuda:0", peak=3.1),
              "linear/fold0/seed0": job("linear", "cpu")}
    assert G.network_jobs_on(on_gpu, "cuda")
    assert not G.network_jobs_on(on_gpu, "cpu")
    fell_back = {**on_gpu, "trial-0/fold1/seed0": job("trial-0", "cpu")}
    assert not G.network_jobs_on(fell_back, "cuda")
    no_peak = {**on_gpu, "trial-0/fold1/seed0": job("trial-0", "cuda:0")}
    assert not G.network_jobs_on(no_peak, "cuda")
    failed = {**on_gpu, "trial-0/fold1/seed0": job("trial-0", "cuda:0", status="error", peak=1.0)}
    assert not G.network_jobs_on(failed, "cuda")
    assert not G.network_jobs_on({"linear/fold0/seed0": job("linear", "cpu")}, "cpu")  # no network job at all


def test_a_submission_must_keep_the_input_order_and_known_labels():
    ids = pd.Series(["b", "a", "c"])
    good = pd.DataFrame({"id": ["b", "a", "c"], "label": ["1-1", "2-3", "1-1"]})
    assert G.submission_matches(good, ids, ["1-1", "2-3"])
    assert not G.submission_matches(good.iloc[[1, 0, 2]], ids, ["1-1", "2-3"])
    assert not G.submission_matches(good.head(2), ids, ["1-1", "2-3"])
    assert not G.submission_matches(good, ids, ["1-1"])


def test_agreement_is_over_the_ids_both_submissions_hold():
    full = pd.DataFrame({"id": ["a", "b", "c", "d"], "label": ["x", "y", "x", "y"]})
    head = pd.DataFrame({"id": ["a", "b"], "label": ["x", "x"]})
    assert G.agreement(full, head) == 0.5
    assert G.agreement(full, head.iloc[:0]) == 0.0


@pytest.mark.ray
def test_the_whole_check_passes_on_the_cpu(tmp_path, capsys):
    with pytest.raises(SystemExit) as ended:
        G.main(["--allow-cpu", "--hidden", "32", "--layers", "1", "--heads", "2", "--rows", "800",
                "--max-epochs", "1", "--cpus-per-trial", "1", "--batch-size", "32", "--cpu-rows", "50",
                "--out", str(tmp_path)])
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert ended.value.code == 0, out
    assert [t for t in summary["timings"]] == ["launch", "confirm", "ensemble", "predict", "predict-cpu"]
    assert len(summary["checks"]) == 4 and all(c["ok"] for c in summary["checks"])
    assert len(summary["jobs"]) == 3 * 2 and {j["device"] for j in summary["jobs"]} == {"cpu"}
    assert "| trial-0/fold1/seed0 | cpu | completed |" in out and out.count("PASS: ") == 4
    assert len(pd.read_csv(tmp_path / "submission.csv")) == len(pd.read_csv(tmp_path / "test.csv"))
    with pytest.raises(SystemExit, match="exists"):  # a second run never mixes with the first
        G.main(["--allow-cpu", "--out", str(tmp_path)])

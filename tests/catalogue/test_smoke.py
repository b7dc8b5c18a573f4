"""Cases that need no fixture beyond the CLI: unknown data paths and shipped-space names."""

import pytest


@pytest.mark.parametrize("argv, needles", [
    (["train-one", "--data", "/nonexistent/train.csv"], ["/nonexistent/train.csv"]),
    (["launch", "--space", "no-such-space"], ["no-such-space"]),
])
def test_refused(refused, argv, needles):
    refused(argv, needles)


def test_a_damaged_copy_is_independent_of_the_original(run_copy, finished_run):
    assert (run_copy / "run.json").read_bytes() == (finished_run / "run.json").read_bytes()
    (run_copy / "run.json").write_text("{")
    assert (finished_run / "run.json").read_text() != "{"

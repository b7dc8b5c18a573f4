import pytest

from model import metrics as M
from rundir.trials import COMPLETED, PRUNED, final_status


@pytest.mark.parametrize(("last_result", "status"), [
    ({M.EPOCH: 4, M.FINISHED: True}, COMPLETED),  # full budget, or its own patience
    ({M.EPOCH: 1, M.FINISHED: False}, PRUNED),  # the scheduler stopped it after epoch 1
    ({M.EPOCH: 2}, PRUNED),  # a result without the flag: not the trial's own end
    ({}, PRUNED),
    (None, PRUNED),  # Ray ended the trial before any result
])
def test_final_status_is_completed_only_when_the_trial_finished_on_its_own(last_result, status):
    assert final_status(last_result) == status

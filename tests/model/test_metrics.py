import numpy as np
import pytest

from model import metrics as M


def test_metrics_against_hand_computed_values():
    # 4 level-2 labels; 0,1 under level-1 0 and 2,3 under level-1 1.
    level1_of = np.array([0, 0, 1, 1])
    y_true = np.array([0, 0, 1, 2, 3, 3])
    y_pred = np.array([0, 1, 1, 2, 2, 3])
    out = M.classification_metrics(y_true, y_pred, level1_of=level1_of)
    # per-class F1: l0: p=1, r=.5 -> 2/3; l1: p=.5, r=1 -> 2/3; l2: p=.5, r=1 -> 2/3; l3: p=1, r=.5 -> 2/3
    assert out["per_class_f1"] == pytest.approx([2 / 3] * 4)
    assert out[M.LEVEL2_MACRO_F1] == pytest.approx(2 / 3)
    # level-1 predictions are all right
    assert out[M.LEVEL1_MACRO_F1] == pytest.approx(1.0)
    assert out[M.ACCURACY] == pytest.approx(4 / 6)


def test_absent_labels_count_as_zero_and_worst5():
    level1_of = np.array([0, 0, 0, 1, 1, 2])
    y_true = np.array([0, 0, 1, 3])
    y_pred = np.array([0, 0, 1, 4])
    out = M.classification_metrics(y_true, y_pred, level1_of=level1_of)
    # F1: 1, 1, 0 (absent), 0 (missed), 0 (false positive), 0 (absent) over 6 labels
    assert out[M.LEVEL2_MACRO_F1] == pytest.approx(2 / 6)
    assert out[M.WORST5_F1] == pytest.approx(1 / 5)
    # level 1: group 0 all right (F1 1), group 1 right (3->1, 4->1: F1 1), group 2 absent (0)
    assert out[M.LEVEL1_MACRO_F1] == pytest.approx(2 / 3)

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from mmcl_lab import metrics as M

# Hand-computed goldens. R[t, j]: accuracy on task j after training task t.
R3 = np.array([[0.9, 0.1, 0.0],
               [0.6, 0.8, 0.2],
               [0.5, 0.7, 0.9]])
INIT3 = np.array([0.2, 0.3, 0.1])


def test_average_accuracy_golden():
    assert M.average_accuracy(R3) == pytest.approx((0.5 + 0.7 + 0.9) / 3)
    assert M.average_accuracy(R3, tasks=[0, 2]) == pytest.approx(0.7)


def test_last_accuracy_is_sample_weighted():
    assert M.last_accuracy(R3, [100, 100, 100]) == pytest.approx(0.7)
    assert M.last_accuracy(R3, [100, 0, 300]) == pytest.approx((50 + 270) / 400)


def test_average_incremental_accuracy_golden():
    # step 0: 0.9; step 1: (0.6 + 0.8)/2 = 0.7; step 2: 0.7
    assert M.average_incremental_accuracy(R3) == pytest.approx((0.9 + 0.7 + 0.7) / 3)


def test_forgetting_golden():
    # task 0: max(0.9, 0.6) - 0.5 = 0.4; task 1: max(0.8) - 0.7 = 0.1
    assert M.forgetting(R3) == pytest.approx(0.25)


def test_backward_transfer_golden():
    # (0.5 - 0.9 + 0.7 - 0.8) / 2
    assert M.backward_transfer(R3) == pytest.approx(-0.25)


def test_forward_transfer_golden():
    # task 1: R[0,1] - init[1] = 0.1 - 0.3; task 2: R[1,2] - init[2] = 0.2 - 0.1
    assert M.forward_transfer(R3, INIT3) == pytest.approx((-0.2 + 0.1) / 2)


def test_forgetting_uses_the_best_earlier_accuracy():
    R = np.array([[0.5, 0.0, 0.0, 0.0], [0.9, 0.7, 0.0, 0.0], [0.4, 0.8, 0.6, 0.0], [0.3, 0.2, 0.6, 1.0]])
    # task 0: 0.9 - 0.3; task 1: 0.8 - 0.2; task 2: 0.6 - 0.6
    assert M.forgetting(R) == pytest.approx((0.6 + 0.6 + 0.0) / 3)
    assert M.backward_transfer(R) == pytest.approx(((0.3 - 0.5) + (0.2 - 0.7) + 0.0) / 3)


def test_subsets_keep_their_meaning():
    assert M.forgetting(R3, tasks=[1]) == pytest.approx(0.1)
    assert M.backward_transfer(R3, tasks=[0]) == pytest.approx(-0.4)
    assert np.isnan(M.forgetting(R3, tasks=[2]))  # the last task cannot be forgotten yet


def test_single_task_metrics():
    R = np.array([[0.8]])
    assert M.average_accuracy(R) == pytest.approx(0.8)
    assert np.isnan(M.forgetting(R)) and np.isnan(M.backward_transfer(R))


def test_accuracy_matrix_from_tidy_rows():
    import pandas as pd
    rows = [dict(step=s, task=j, modality="image", setting="known", metric="acc", value=v, n=10)
            for s, row in zip([-1, 0, 1, 2], [INIT3, *R3]) for j, v in enumerate(row)]
    R, init = M.accuracy_matrix(pd.DataFrame(rows), "known")
    np.testing.assert_allclose(R, R3)
    np.testing.assert_allclose(init, INIT3)
    table = M.summary(pd.DataFrame(rows))
    assert table.loc[table.modality == "all", "forgetting"].item() == pytest.approx(0.25)


square = st.integers(2, 6).flatmap(lambda n: arrays(np.float64, (n, n), elements=st.floats(0, 1)))


@given(square)
def test_metrics_stay_within_their_ranges(R):
    # Forgetting is negative when the final accuracy beats every earlier one (Chaudhry's definition).
    assert -1.0 <= M.forgetting(R) <= 1.0
    assert -1.0 <= M.backward_transfer(R) <= 1.0
    assert 0.0 <= M.average_accuracy(R) <= 1.0


@given(st.integers(2, 6), st.floats(0, 1))
def test_a_constant_matrix_forgets_nothing(n, value):
    R = np.full((n, n), value)
    assert M.forgetting(R) == pytest.approx(0.0) and M.backward_transfer(R) == pytest.approx(0.0)
    assert M.average_accuracy(R) == pytest.approx(value)


@given(square)
def test_forgetting_bounds_negative_bwt(R):
    assert M.forgetting(R) >= -M.backward_transfer(R) - 1e-12


# ---- ZSCL's Transfer / Avg / Last, against ZSCL's own stored matrices -------------------------------------------

ZSCL = Path(__file__).parent / "fixtures" / "zscl"
ORDER_II = [9, 6, 7, 8, 5, 10, 0, 1, 3, 4, 2]  # ZSCL's mtil/results.ipynb: Order II as a permutation of Order I


def _zscl_matrix(name: str, order: int) -> np.ndarray:
    """A stored MTIL matrix as ZSCL's notebook reads it: 11 x 12, CIFAR-10's column (2) dropped, Order II permuted."""
    R = np.delete(np.load(ZSCL / name, allow_pickle=False).reshape(11, -1), 2, axis=1)  # (11 steps, 11 tasks)
    return R[ORDER_II][:, ORDER_II] if order == 2 else R


@pytest.mark.parametrize("name,order,published", [("t3_7.npy", 1, (68.1, 75.4, 83.6)),
                                                  ("t9_7.npy", 2, (64.2, 74.5, 83.4))])
def test_zscl_golden(name, order, published):
    R = _zscl_matrix(name, order)
    got = (M.zscl_transfer(R), M.zscl_avg(R), M.zscl_last(R))
    assert tuple(round(v, 1) for v in got) == published


def test_zscl_metrics_by_hand():
    R = np.array([[0.9, 0.2, 0.1],
                  [0.8, 0.9, 0.3],
                  [0.7, 0.8, 0.9]])
    assert M.zscl_transfer(R) == pytest.approx(np.mean([0.2, np.mean([0.1, 0.3])]))
    assert M.zscl_avg(R) == pytest.approx(R.mean())
    assert M.zscl_last(R) == pytest.approx(0.8)
    assert M.zscl_transfer(R, [2]) == pytest.approx(0.2)  # a subset keeps its meaning; task 0 has no transfer
    assert np.isnan(M.zscl_transfer(R, [0]))

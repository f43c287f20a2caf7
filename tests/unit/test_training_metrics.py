"""Every metric agrees with scikit-learn / scipy, including ties and degenerate cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from trunkserve.training.metrics import MetricError, accuracy, compute_metrics, f1_binary, headline, matthews, pearson, spearman


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    assert accuracy(y, p) == pytest.approx(accuracy_score(y, p))
    assert f1_binary(y, p) == pytest.approx(f1_score(y, p))
    assert matthews(y, p) == pytest.approx(matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    assert matthews(y3, p3) == pytest.approx(matthews_corrcoef(y3, p3))


def test_degenerate_cases_match_sklearn():
    y = np.array([0, 1, 1, 0])
    const = np.zeros(4, dtype=int)
    assert matthews(y, const) == pytest.approx(matthews_corrcoef(y, const)) == 0.0
    assert f1_binary(y, const) == pytest.approx(f1_score(y, const, zero_division=0))


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=300)
    y = x + rng.normal(size=300)
    y_tied = np.round(y * 2) / 2  # many ties, like STS-B's 0.2-step scores
    assert pearson(x, y) == pytest.approx(pearsonr(x, y)[0], abs=1e-10)
    assert spearman(x, y_tied) == pytest.approx(spearmanr(x, y_tied)[0], abs=1e-10)


def test_task_conventions():
    logits = np.array([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0], [0.0, 1.0]])
    y = np.array([0, 1, 1, 1])
    m = compute_metrics("mrpc", logits, y)
    assert set(m) == {"f1", "accuracy"} and m["accuracy"] == 0.75 and m["f1"] == pytest.approx(f1_score(y, [0, 1, 0, 1]))
    assert headline(m) == pytest.approx(100 * (m["f1"] + m["accuracy"]) / 2)
    assert set(compute_metrics("cola", logits, y)) == {"mcc"}
    assert set(compute_metrics("sst2", logits, y)) == {"accuracy"}
    s = compute_metrics("stsb", np.array([[1.0], [2.0], [3.5]]), np.array([0.5, 2.5, 3.0]))
    assert set(s) == {"pearson", "spearman", "mae", "rmse"} and s["spearman"] == pytest.approx(1.0)
    # every prediction 0.5 off: MAE and RMSE 0.5, in label units, and not part of the headline
    assert s["mae"] == pytest.approx(0.5) and s["rmse"] == pytest.approx(0.5)
    assert headline(s) == pytest.approx(100 * (s["pearson"] + s["spearman"]) / 2)
    with pytest.raises(MetricError):
        compute_metrics("nope", logits, y)
    with pytest.raises(MetricError):
        compute_metrics("sst2", logits, y[:3])

"""GLUE metrics by the usual conventions, in plain numpy (tests check them against scikit-learn/scipy).

Per task: Matthews correlation (CoLA); accuracy (SST-2, QNLI, RTE, MNLI); F1 of the
positive class and accuracy (MRPC, QQP); Pearson and Spearman (STS-B). The task's
headline score, used for selection and the report, is the mean of its metrics x 100
(the GLUE leaderboard convention for two-metric tasks). Regression also reports the
error measures MAE and RMSE (in label units): correlation alone scores a head whose
predictions all sit near one value as well as one that fits the scale. They are not in
the headline (lower is better), but the quality gate reads them.
"""

from __future__ import annotations

import numpy as np

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy",),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    # custom tasks
    "binary": ("accuracy", "f1"),
    "multiclass": ("accuracy",),
    "regression": ("pearson", "spearman"),
}


class MetricError(ValueError):
    """Unknown metric family or mismatched predictions/labels."""


def accuracy(labels, preds) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    return float((labels == preds).mean())


def f1_binary(labels, preds, positive: int = 1) -> float:
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = float(((preds == positive) & (labels == positive)).sum())
    fp = float(((preds == positive) & (labels != positive)).sum())
    fn = float(((preds != positive) & (labels == positive)).sum())
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def matthews(labels, preds) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K), 0 when undefined, as scikit-learn."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    classes = np.union1d(labels, preds)
    idx = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for y, p in zip(labels, preds):
        cm[idx[y], idx[p]] += 1
    t, p = cm.sum(axis=1), cm.sum(axis=0)
    c, s = np.trace(cm), cm.sum()
    denom = np.sqrt((s * s - (p * p).sum()) * (s * s - (t * t).sum()))
    return 0.0 if denom == 0 else float((c * s - (t * p).sum()) / denom)


def pearson(x, y) -> float:
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    x, y = x - x.mean(), y - y.mean()
    denom = np.sqrt((x * x).sum() * (y * y).sum())
    return 0.0 if denom == 0 else float((x * y).sum() / denom)


def _ranks(x) -> np.ndarray:
    """Ranks with ties averaged (as scipy's ``rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    return pearson(_ranks(x), _ranks(y))


ERROR_METRICS = ("mae", "rmse")


def mae(preds, labels) -> float:
    return float(np.abs(np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64)).mean())


def rmse(preds, labels) -> float:
    return float(np.sqrt(((np.asarray(preds, dtype=np.float64) - np.asarray(labels, dtype=np.float64)) ** 2).mean()))


_FUNCS = {"accuracy": accuracy, "f1": f1_binary, "mcc": matthews, "pearson": pearson, "spearman": spearman}


def compute_metrics(metric: str, outputs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """``outputs``: logits ``[N, C]`` (argmax taken) or scores ``[N]``/``[N, 1]``; returns {name: value in 0..1}."""
    if metric not in TASK_METRICS:
        raise MetricError(f"unknown metric family {metric!r}; known: {sorted(TASK_METRICS)}")
    outputs, labels = np.asarray(outputs), np.asarray(labels)
    if len(outputs) != len(labels):
        raise MetricError(f"{len(outputs)} predictions for {len(labels)} labels")
    names = TASK_METRICS[metric]
    if names[0] in ("pearson", "spearman"):
        preds = outputs.reshape(len(outputs))
    else:
        preds = outputs.argmax(axis=-1) if outputs.ndim == 2 else outputs
    out = {n: _FUNCS[n](labels, preds) if n not in ("pearson", "spearman") else _FUNCS[n](preds, labels) for n in names}
    if names[0] in ("pearson", "spearman"):
        out.update(mae=mae(preds, labels), rmse=rmse(preds, labels))
    return out


def majority_outputs(train_labels: np.ndarray, n: int, num_labels: int, regression: bool) -> np.ndarray:
    """What a model that ignores its input would answer ``n`` times: the training set's most
    frequent class (as one-hot logits), or its mean score. Scored like a head, it is "chance"."""
    train_labels = np.asarray(train_labels)
    if regression:
        return np.full((n, 1), float(train_labels.mean()), dtype=np.float32)
    counts = np.bincount(train_labels.astype(np.int64), minlength=num_labels)
    out = np.zeros((n, num_labels), dtype=np.float32)
    out[:, int(counts.argmax())] = 1.0
    return out


def headline(metrics: dict[str, float]) -> float:
    """Mean of the task's metrics x 100 (GLUE convention); error measures are not part of it."""
    return 100.0 * float(np.mean([v for k, v in metrics.items() if k not in ERROR_METRICS]))

"""One-dimensional k-means for weight clustering: Lloyd's iterations on sorted values.

In one dimension the nearest centroid of a value is found by a binary search among the midpoints of
the sorted centroids, so an iteration costs O(n log k) and a 235k-weight layer clusters in
milliseconds.

>>> import numpy as np
>>> centroids, labels = kmeans_1d(np.array([0.1, 0.11, 0.9, 1.0]), 2, "linear")
>>> np.round(centroids, 3).tolist(), labels.tolist()
([0.105, 0.95], [0, 0, 1, 1])
"""
from __future__ import annotations

import numpy as np

INITS = ("linear", "density", "kmeans++")


def init_centroids(values: np.ndarray, k: int, method: str, rng: np.random.Generator) -> np.ndarray:
    """``k`` starting centroids (sorted, distinct) for the 1-D ``values``.

    - ``linear``: evenly spaced between the smallest and the largest value (keeps the rare large
      weights represented; Deep Compression found it the best for accuracy).
    - ``density``: evenly spaced along the cumulative distribution (quantiles), dense where weights are.
    - ``kmeans++``: random picks weighted by the squared distance to the nearest centroid so far.
    """
    if method == "linear":
        c = np.linspace(values.min(), values.max(), k)
    elif method == "density":
        c = np.quantile(values, (np.arange(k) + 0.5) / k)
    elif method == "kmeans++":
        c = [values[rng.integers(len(values))]]
        d2 = (values - c[0]) ** 2
        for _ in range(1, k):
            total = d2.sum()
            if total <= 0:  # every value already coincides with a centroid
                break
            pick = values[rng.choice(len(values), p=d2 / total)]
            c.append(pick)
            np.minimum(d2, (values - pick) ** 2, out=d2)
        c = np.asarray(c)
    else:
        raise ValueError(f"unknown init {method!r}; choose one of {', '.join(INITS)}")
    return np.unique(c)


def assign(values: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest centroid for every value (``centroids`` sorted ascending)."""
    if len(centroids) == 1:
        return np.zeros(len(values), dtype=np.int64)
    return np.searchsorted((centroids[:-1] + centroids[1:]) / 2, values)


def kmeans_1d(values: np.ndarray, k: int, init: str = "linear", iterations: int = 50, seed: int = 0,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D ``values`` into at most ``k`` groups.

    Returns ``(centroids, labels)``: centroids sorted ascending (float64, empty clusters dropped, so
    there may be fewer than ``k``) and, per value, the index of its nearest centroid. Centroids are the
    means of their members once the labels are stable (or after ``iterations`` rounds). When the values hold at
    most ``k`` distinct numbers, those numbers are the centroids and clustering is exact.
    """
    values = np.asarray(values, dtype=np.float64).ravel()
    if values.size == 0:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    distinct = np.unique(values)
    if len(distinct) <= k:
        return distinct, np.searchsorted(distinct, values)
    centroids = init_centroids(values, k, init, np.random.default_rng(seed))
    labels = assign(values, centroids)
    for it in range(iterations):
        counts = np.bincount(labels, minlength=len(centroids))
        sums = np.bincount(labels, weights=values, minlength=len(centroids))
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        empty = np.flatnonzero(counts == 0)
        if len(empty) and it < iterations // 2:
            # An empty cluster (e.g. a linear-init centroid inside the gap left by pruning) moves to the
            # worst-represented values, so all k shared values get used. Late in the run it is dropped.
            error = (values - updated[labels]) ** 2
            far = np.unique(values[np.argsort(error)[::-1][:4 * len(empty)]])
            far = far[~np.isin(far, updated)][:len(empty)]
            updated[empty[:len(far)]] = far
        updated = np.unique(updated)
        new_labels = assign(values, updated)
        stable = np.array_equal(new_labels, labels) if len(updated) == len(centroids) else False
        centroids, labels = updated, new_labels
        if stable:
            break
    used = np.bincount(labels, minlength=len(centroids)) > 0
    if not used.all():  # removing a centroid nobody is nearest to leaves every other label as it is
        centroids = centroids[used]
        labels = assign(values, centroids)
    return centroids, labels

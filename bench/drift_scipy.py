"""The scipy/numpy side of the drift benchmark: the same per-feature statistics, timed.

Usage: python3 bench/drift_scipy.py <file>
The file holds one JSON header line {"features": F, "n": N} ending in a newline, then F*N
reference values and F*N current values as little-endian float64, feature-major (feature 0's N
values first). For each feature it computes, as domain/drift does: interior edges at the
reference's lower (inverted_cdf) deciles, unique and above the reference's minimum; both sides'
bin counts over (-inf, e0), [e0, e1), ..., [e_last, inf); PSI (natural log, 0.5 added to every
bin of both sides when a bin is empty); the Jensen-Shannon distance (base 2); ks_2samp with
method='asymp'; and wasserstein_distance. Prints one JSON line {"seconds": s}: the time of those
computations, reading the file left out.
"""

import json
import sys
import time

import numpy as np
from scipy.spatial.distance import jensenshannon
from scipy.stats import ks_2samp, wasserstein_distance

BINS = 10
PSEUDOCOUNT = 0.5


def read(path):
    with open(path, "rb") as f:
        header = json.loads(f.readline())
        features, n = int(header["features"]), int(header["n"])
        data = np.frombuffer(f.read(), dtype="<f8")
    if data.size != 2 * features * n:
        raise ValueError(f"{path}: expected {2 * features * n} float64 values, got {data.size}")
    reference = data[: features * n].reshape(features, n)
    current = data[features * n :].reshape(features, n)
    return reference, current


def feature_statistics(reference, current):
    q = np.arange(1, BINS) / BINS
    edges = np.unique(np.quantile(reference, q, method="inverted_cdf"))
    edges = edges[edges > reference.min()]
    bins = len(edges) + 1
    ref_counts = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=bins)
    cur_counts = np.bincount(np.searchsorted(edges, current, side="right"), minlength=bins)
    pseudocount = PSEUDOCOUNT if (ref_counts == 0).any() or (cur_counts == 0).any() else 0.0
    p = (ref_counts + pseudocount) / (ref_counts + pseudocount).sum()
    r = (cur_counts + pseudocount) / (cur_counts + pseudocount).sum()
    psi = float(np.sum((r - p) * np.log(r / p)))
    js = float(jensenshannon(ref_counts, cur_counts, base=2))
    ks = ks_2samp(reference, current, method="asymp")
    distance = float(wasserstein_distance(reference, current))
    return psi, js, float(ks.statistic), float(ks.pvalue), distance


def main():
    reference, current = read(sys.argv[1])
    started = time.perf_counter()
    for f in range(reference.shape[0]):
        feature_statistics(reference[f], current[f])
    print(json.dumps({"seconds": time.perf_counter() - started}))


if __name__ == "__main__":
    main()

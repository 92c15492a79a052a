"""Held-out quality of the BlockQNN-Bench surrogate, for each model (gradient-boosted trees,
random forest): Kendall tau and R^2 of the predicted against the measured accuracy (mean over
seeds) on (a) a random 20% of the blocks, fitted on the rest (5 splits), and (b) the blocks of
the Q-learning runs, fitted on the random-search runs only (another sampling strategy), and
the fit time. Also the table's size and the measured seed-to-seed noise. Where the table has
blocks of more than 10 layers (the paper's 23-layer space, bench/collect.sh 23): the random
splits scored apart for blocks of up to 10 layers and of 11-23 layers, tau within the top 10%
of blocks (by measured accuracy; where a search is decided), the predicted against the measured
spread of each group, and (c) the extrapolation the surrogate made before the 23-layer
collection: fitted on the blocks of up to 10 layers, scored on the deeper ones. Prints one JSON
line last.

usage: python bench/surrogate_quality.py [table]   (default bench/data/blockqnn_bench.csv.gz)"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau
from sklearn.metrics import r2_score

from blockqnn.evaluator.surrogate import (
    DEFAULT_TABLE,
    MODELS,
    block_features,
    fit_model,
    measured,
    read_table,
)
from blockqnn.space.nsc import LayerType


def score(kind, x_fit, y_fit, x_test, y_test):
    t = time.perf_counter()
    model = fit_model(kind, x_fit, y_fit)
    fit_s = time.perf_counter() - t
    pred = model.predict(x_test)
    return {
        "tau": float(kendalltau(pred, y_test)[0]),
        "r2": float(r2_score(y_test, pred)),
        "fit_s": fit_s,
    }


def _scores(pred, y) -> dict:
    return {
        "blocks": int(len(y)),
        "tau": float(kendalltau(pred, y)[0]),
        "r2": float(r2_score(y, pred)),
        "measured_sd": float(np.std(y)),
        "predicted_sd": float(np.std(pred)),
    }


def by_depth(kind, x, acc, depth, rng, splits=5) -> dict:
    """Random 20% splits (fit on the rest), scored per group of the held-out blocks: up to 10
    layers, 11-23 layers, the table's top 10% by measured accuracy (all depths, and deep)."""
    top = acc >= np.quantile(acc, 0.9)
    groups = {
        "up_to_10_layers": depth <= 10,
        "11_to_23_layers": depth > 10,
        "top_10pct": top,
        "top_10pct_11_to_23": top & (depth > 10),
    }
    found: dict[str, list] = {g: [] for g in groups}
    for _ in range(splits):
        test = rng.random(len(acc)) < 0.2
        pred = fit_model(kind, x[~test], acc[~test]).predict(x)
        for g, member in groups.items():
            sel = test & member
            if sel.sum() >= 10:
                found[g].append(_scores(pred[sel], acc[sel]))
    out = {}
    for g, scores in found.items():
        if scores:
            out[g] = {k: round(float(np.mean([s[k] for s in scores])), 4) for k in scores[0]}
            out[g]["tau_sd"] = round(float(np.std([s["tau"] for s in scores])), 4)
    return out


def main(table: Path) -> dict:
    rows = read_table(table)
    keys, nscs, acc, count, noise = measured(rows)
    x = np.stack([block_features(json.loads(s)) for s in nscs])
    runs: dict = {}
    for r in rows:
        runs.setdefault(r["key"], set()).add(r["run"].split("-")[0])
    out = {
        "bench": "surrogate_quality",
        "table": str(table),
        "trainings": len(rows),
        "blocks": len(keys),
        "repeated_blocks": int((count > 1).sum()),
        "noise_std": None if np.isnan(noise) else noise,
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": float(acc.std()),
    }
    rng = np.random.default_rng(0)
    for kind in MODELS:
        splits = []
        for _ in range(5):
            test = rng.random(len(keys)) < 0.2
            splits.append(score(kind, x[~test], acc[~test], x[test], acc[test]))
        out[f"{kind}_random_20"] = {
            k: round(float(np.mean([s[k] for s in splits])), 4) for k in splits[0]
        }
        out[f"{kind}_random_20"]["tau_sd"] = round(float(np.std([s["tau"] for s in splits])), 4)
        fit = np.array(["random" in runs[k] for k in keys])
        test = np.array(["qlearning" in runs[k] and "random" not in runs[k] for k in keys])
        if fit.sum() >= 20 and test.sum() >= 20:
            out[f"{kind}_random_to_qlearning"] = {
                k: round(v, 4) for k, v in score(kind, x[fit], acc[fit], x[test], acc[test]).items()
            }
            out[f"{kind}_random_to_qlearning"]["test_blocks"] = int(test.sum())
    depth = np.array([sum(1 for la in json.loads(n) if la[1] != LayerType.TERMINAL) for n in nscs])
    out["blocks_up_to_10_layers"] = int((depth <= 10).sum())
    out["blocks_11_to_23_layers"] = int((depth > 10).sum())
    deep = depth > 10
    if deep.sum() >= 20 and (~deep).sum() >= 20:
        for kind in MODELS:
            out[f"{kind}_by_depth"] = by_depth(kind, x, acc, depth, np.random.default_rng(1))
            pred = fit_model(kind, x[~deep], acc[~deep]).predict(x[deep])
            out[f"{kind}_shallow_to_deep"] = {
                k: round(v, 4) if isinstance(v, float) else v
                for k, v in _scores(pred, acc[deep]).items()
            }
    return out


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TABLE)))

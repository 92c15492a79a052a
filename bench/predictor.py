"""The faster version against the plain search on the digits proxy, over 5 seeds: trainings
saved and best measured reward, and the predictor's Kendall tau on held-out measured blocks.
Prints one JSON line last.

usage: python bench/predictor.py [seeds]"""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import episodes, mean_ci, run_search, save_raw  # noqa: E402

COMMON = [
    "logger=none",
    "executor=pool",
    "agent.batch_size=8",
    "agent.epsilon_schedule=[[1.0,3],[0.5,2],[0.1,2]]",
    "space.max_layers=6",
]


def heldout_tau(rows: list[dict]) -> float:
    """Fit the forest on the first half of the measured blocks, Kendall tau on the rest."""
    from blockqnn.predictor import RewardPredictor, kendall_tau
    from blockqnn.space.nsc import Block

    measured = [
        (r["id"], json.loads(r["nsc"]), r["reward"])
        for r in rows
        if r["status"] != "running" and not r["reused"] and not r["predicted"]
    ]
    half = len(measured) // 2
    p = RewardPredictor(min_measured=2)
    p.fit(measured[:half])
    preds = [p.predict(Block.parse(nsc))[0] for _, nsc, _ in measured[half:]]
    return kendall_tau(preds, [r for _, _, r in measured[half:]])


def main(seeds: int = 5) -> dict:
    out: dict = {"bench": "predictor", "data": "digits", "episodes": 56, "seeds": seeds}
    plain_t, plain_b, pred_t, pred_b, taus, predicted = [], [], [], [], [], []
    for seed in range(seeds):
        folder, _ = run_search([*COMMON, f"seed={seed}"])
        rows = episodes(folder)
        plain_t.append(sum(1 for r in rows if not r["reused"]))
        plain_b.append(max(r["reward"] for r in rows))
        taus.append(heldout_tau(rows))
        folder, _ = run_search([*COMMON, f"seed={seed}", "predictor=forest"])
        rows = episodes(folder)
        pred_t.append(sum(1 for r in rows if not r["reused"] and not r["predicted"]))
        predicted.append(sum(1 for r in rows if r["predicted"]))
        pred_b.append(max(r["reward"] for r in rows if not r["predicted"]))
    saved = [1 - p / q for p, q in zip(pred_t, plain_t)]
    for name, vals in (
        ("trainings_plain", plain_t),
        ("trainings_predictor", pred_t),
        ("saved_share", saved),
        ("best_plain", plain_b),
        ("best_predictor", pred_b),
        ("heldout_tau", taus),
    ):
        m, ci = mean_ci(vals)
        out[name] = {
            "mean": round(m, 4),
            "ci95": round(ci, 4),
            "per_seed": [round(v, 4) for v in vals],
        }
    out["predicted_episodes"] = predicted
    return out


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    print(json.dumps(save_raw("predictor", main(*args))))

"""The NSC studies' p-values, corrected (issue 34, item 5): every paired test that
bench/studies.py reported, read from ``bench/results/studies/<study>.json`` and its runs
(``runs.jsonl``), with a primary comparison named for each study and Holm's correction over the
rest. Nothing is rerun.

    python bench/study_statistics.py   # -> bench/results/studies/holm.json; --markdown for tables

The studies ran before this project declared a primary comparison ahead of a study, so the
primaries below are named after the fact: they are the question each study was built to answer,
not the comparison that came out best, and they are labelled so. The ``confirm`` study is the
exception: it was run on fresh seeds to confirm one lead (type-first against uniform random
steps), which makes that test confirmatory. Every other test is secondary (exploratory), and
its p-value is adjusted by Holm over the whole family of the studies' secondary tests.

Also per study: whether every search of a budget trained the same oracle block (the best true
reward among the blocks it trained), in which case its comparisons measure the final pick under
seed noise, not the search. Prints one JSON line last."""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import ROOT  # noqa: E402

from blockqnn.compare import MIN_WILCOXON_PAIRS, holm, paired_p  # noqa: E402

STUDIES = ROOT / "bench" / "results" / "studies"

#: study -> (group, the p-value's key, what it asks): the one primary comparison of each study.
PRIMARY = {
    "strategies_80": ("random", "p_returned_true_vs_qlearning", "Q-learning vs random search"),
    "strategies_496": ("random", "p_returned_true_vs_qlearning", "Q-learning vs random search"),
    "strategies_2000": ("random", "p_returned_true_vs_qlearning", "Q-learning vs random search"),
    "strategies_11392": ("random", "p_returned_true_vs_qlearning", "Q-learning vs random search"),
    "predictor_11392": (
        "qlearning + predictor=forest",
        "p_returned_true_vs_qlearning",
        "the predictor's returned block vs Q-learning's",
    ),
}
CONFIRM = ("default: lr 0.1, q_init 1.0, type_first", "explore uniform (the paper's)")


def study_tests() -> tuple[dict, dict]:
    """(every reported test: (study, group, key) -> (p, pairs), per-study seeds per group)."""
    tests, seeds = {}, {}
    for path in sorted(STUDIES.glob("*_*.json")):
        study = path.stem
        if study in ("regen", "holm"):
            continue
        data = json.loads(path.read_text())
        seeds[study] = {g: v.get("seeds") for g, v in data.items() if isinstance(v, dict)}
        for group, v in data.items():
            if not isinstance(v, dict):
                continue
            for key, p in v.items():
                if key.startswith("p_") and isinstance(p, (int, float)):
                    tests[(study, group, key)] = (float(p), v.get("seeds"))
    return tests, seeds


def confirm_pooled() -> dict:
    """The confirmatory test: type-first against uniform random steps, the returned block's
    true reward, paired by seed over the confirm study's fresh seeds at every budget."""
    runs = [json.loads(line) for line in (STUDIES / "runs.jsonl").open()]
    by = {(r["study"], r["group"], r["seed"]): r["returned_true"] for r in runs}
    a, b = [], []
    for (study, group, seed), v in by.items():
        if study.startswith("confirm") and group == CONFIRM[0] and (study, CONFIRM[1], seed) in by:
            a.append(v)
            b.append(by[(study, CONFIRM[1], seed)])
    return {
        "comparison": "type-first vs uniform random steps, returned block's true reward",
        "pairs": len(a),
        "difference": round(sum(x - y for x, y in zip(a, b)) / len(a), 4) if a else None,
        "p": paired_p(a, b),
    }


def oracles() -> dict:
    """Per study and group: how many of its searches trained the study's best block (their
    oracle, the best true reward among the blocks a search trained, is the best any search of the
    study trained). Where all did, a comparison measures the final pick, not the search."""
    runs = [json.loads(line) for line in (STUDIES / "runs.jsonl").open()]
    by_study = defaultdict(list)
    for r in runs:
        by_study[r["study"]].append(r)
    out = {}
    for study, rs in sorted(by_study.items()):
        top = max(r["oracle_true"] for r in rs)
        groups = defaultdict(lambda: [0, 0])
        for r in rs:
            groups[r["group"]][0] += abs(r["oracle_true"] - top) < 1e-9
            groups[r["group"]][1] += 1
        out[study] = {
            "best_true_reward": round(top, 4),
            "trained_the_best_block": {g: f"{a} of {n}" for g, (a, n) in sorted(groups.items())},
        }
    return out


def main() -> dict:
    tests, seeds = study_tests()
    reported = len(tests)
    no_test = {k: v for k, v in tests.items() if v[1] is not None and v[1] < MIN_WILCOXON_PAIRS}
    valid = {k: v for k, v in tests.items() if k not in no_test}
    primary_keys = {(s, g, k) for s, (g, k, _) in PRIMARY.items()}
    primaries = {
        s: {
            "comparison": what + ", returned block's true reward (named after the study ran)",
            "p": valid.get((s, g, k), (None,))[0],
            "pairs": seeds[s][g],
        }
        for s, (g, k, what) in PRIMARY.items()
    }
    # One question (Q-learning against random search) at four budgets: Holm over the four.
    budgets = holm({s: v["p"] for s, v in primaries.items() if s.startswith("strategies")})
    for s, p in budgets.items():
        primaries[s]["p_holm_over_budgets"] = round(p, 4)
    secondary = {k: p for k, (p, _) in valid.items() if k not in primary_keys}
    adjusted = holm({"|".join(k): p for k, p in secondary.items()})
    rows = [
        {
            "study": s,
            "group": g,
            "test": k,
            "p": p,
            "p_holm": round(adjusted["|".join((s, g, k))], 4),
        }
        for (s, g, k), p in sorted(secondary.items(), key=lambda kv: kv[1])
    ]
    result = {
        "bench": "study_statistics",
        "reported_p_values": reported,
        "reported_below_0.05": sum(p < 0.05 for p, _ in tests.values()),
        "wilcoxon_at_5_or_fewer_pairs": len(no_test),
        "valid_tests": len(valid),
        "primary": primaries,
        "confirmatory": confirm_pooled(),
        "secondary_tests": len(secondary),
        "secondary_below_0.05": sum(r["p"] < 0.05 for r in rows),
        "secondary_below_0.05_after_holm": sum(r["p_holm"] < 0.05 for r in rows),
        "secondary": rows,
        "oracles": oracles(),
    }
    (STUDIES / "holm.json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def markdown(r: dict) -> str:
    lines = ["| study | primary comparison | pairs | p |", "|---|---|---|---|"]
    for s, v in r["primary"].items():
        p = "no test (n <= 5)" if v["p"] is None else f"{v['p']:.3g}"
        h = v.get("p_holm_over_budgets")
        p += "" if h is None else f" (Holm over the 4 budgets: {h:.3g})"
        lines.append(f"| {s} | {v['comparison']} | {v['pairs']} | {p} |")
    c = r["confirmatory"]
    lines.append(
        f"| confirm (80, 496, 2,000) | {c['comparison']} (confirmatory) | {c['pairs']} | {c['p']:.2g} |"
    )
    lines += [
        "",
        "| secondary test (below 0.05 before correction) | p | p (Holm) |",
        "|---|---|---|",
    ]
    for row in r["secondary"]:
        if row["p"] < 0.05:
            lines.append(
                f"| {row['study']}: {row['group']}, {row['test']} | {row['p']:.3g} | {row['p_holm']:.3g} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true")
    a = parser.parse_args()
    out = main()
    if a.markdown:
        print(markdown(out))
    brief = {k: v for k, v in out.items() if k not in ("secondary", "oracles", "primary")}
    print(json.dumps(brief))

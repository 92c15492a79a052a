"""End to end, as the field runs it (issue 34, item 3): independent searches of each strategy at
equal unique trainings, their returned blocks and every hand-designed block, pre-registered,
then trained under the final recipe at one parameter budget; the pre-registered analysis
(BENCHMARKS.md "The search at a budget, end to end") with search runs as the unit.

    nohup python bench/end_to_end.py > /tmp/end_to_end.log 2>&1 &   # the CPU study; resumable
    nohup python bench/end_to_end.py --profile cpu_refuse > ... &    # the same, parameter-free rule
    python bench/end_to_end.py --profile tiny --out <dir>             # the whole pipeline, tiny
    python bench/end_to_end.py --analyse [--markdown]                 # the analysis of what is recorded

Steps (each record is kept as it lands; a rerun continues where the last one stopped):
  1. searches: ``search.py`` for every strategy (Q-learning, random search) and search seed, on
     the profile's proxy, each stopped at the same number of unique trainings
     (``search.max_trainings``) and re-evaluating its leaders; its returned block is
     best_block.json (the best mean among the re-evaluated leaders);
  2. registration: the returned blocks (deduplicated) and the hand-designed blocks, written once
     to ``end_to_end_<profile>_registered.json`` before any final training; a later run never
     changes it;
  3. final trainings: each registered block under the final recipe (bench/fidelity_final.FINAL:
     all 60,000 Fashion-MNIST training images split 50,000 / 10,000, 100k parameters, 3 epochs),
     every final seed; validation and test accuracy recorded; the test figure is read by the
     analysis only;
  4. the analysis (``end_to_end_<profile>_analysis.json``, the figure
     ``end_to_end_<profile>_final_accuracies.png``): the best
     hand-designed block chosen by mean validation accuracy; the primary test (Q-learning's
     returned blocks against it, one-sided, search runs as the unit, paired by seed), its
     equivalence test at +-1 pp if not significant, two secondary tests under Holm; no p-value
     from fewer than 3 runs. Prints one JSON line last."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from _common import commit  # noqa: E402
from _common import load_json as _load  # noqa: E402
from _common import save_json as _save  # noqa: E402
from fidelity_final import FINAL  # noqa: E402

FIDELITY = ROOT / "bench" / "results" / "fidelity"
EQUIVALENCE_PP = 0.01  # the equivalence bound: +-1 percentage point of test accuracy

#: What each profile runs (why these sizes: BENCHMARKS.md "The search at a budget, end to end").
PROFILES = {
    "cpu": {
        # The proxy chosen by the fidelity study (BENCHMARKS.md "Proxy fidelity"), as the
        # pre-registered study ran it: before network.parameter_free existed (its finding).
        "proxy": ["experiment=bench_proxy", "network.parameter_free=allow"],
        "search": [
            "executor=pool",
            "logger=none",
            "agent.epsilon_schedule=[[1.0,12],[0.7,4],[0.4,4],[0.1,10]]",
            "agent.batch_size=8",
            "search.max_trainings=200",
            "search.reevaluate.top=3",
            "search.reevaluate.repeats=2",
        ],
        "strategies": {"qlearning": ["agent=qlearning"], "random": ["agent=random"]},
        "search_seeds": [0, 1, 2, 3, 4, 5],
        "final": [*[o for o in FINAL if o != "train.test=false"], "train.test=true"],
        "final_seeds": [0, 1, 2, 3],
        "hand": "registered",  # the fidelity study's hand-designed blocks (blocks.json)
    },
    "tiny": {
        # cpu's pipeline in miniature (its parameter_free too: at 2 layers, refused blocks
        # would take up the 6 episodes and leave the budget in trainings unspent).
        "proxy": ["debug=smoke", "network.params=3000", "network.parameter_free=allow"],
        "search": [
            "logger=none",
            "space.max_layers=2",
            "agent.epsilon_schedule=[[1.0,1],[0.3,1]]",
            "agent.batch_size=3",
            "search.max_trainings=3",
            "search.reevaluate.top=1",
            "search.reevaluate.repeats=1",
        ],
        "strategies": {"qlearning": ["agent=qlearning"], "random": ["agent=random"]},
        "search_seeds": [0, 1, 2],  # 3 runs each: the fewest that give a p-value
        "final": [
            "data=digits",
            "network.params=6000",
            "network.blocks_per_stage=1",
            "train.epochs=1",
            "train.batch_size=64",
            "train.test=true",
            "train.export=false",
            "logger=none",
        ],
        "final_seeds": [0],
        "hand": {
            "plain": [[1, 1, 3, 0, 0], [2, 7, 0, 0, 0]],
            "conv5": [[1, 1, 5, 0, 0], [2, 7, 0, 0, 0]],
        },
    },
}
# The same study under network.parameter_free=refuse (an option; the search's default for a day
# after the "cpu" study's searches all returned blocks without parameters, BENCHMARKS.md "After
# the searches"):
# its own 6 + 6 searches and registration; final trainings of a block and seed that "cpu"
# already trained under the same recipe are taken from its records, not trained again.
PROFILES["cpu_refuse"] = {
    **PROFILES["cpu"],
    "proxy": ["experiment=bench_proxy", "network.parameter_free=refuse"],
    "finals_from": "cpu",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run(script: str, args: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / script), *args], capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{script} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")


def _trainings(folder: Path) -> dict:
    import sqlite3

    con = sqlite3.connect(folder / "search.db")
    episodes = con.execute("SELECT count(*) FROM episodes").fetchone()[0]
    first = con.execute(
        "SELECT count(*) FROM episodes WHERE reused = 0 AND predicted = 0 AND status != 'invalid'"
    ).fetchone()[0]
    refused = con.execute(
        "SELECT count(*) FROM episodes WHERE reused = 0 AND status = 'invalid'"
    ).fetchone()[0]
    again = con.execute("SELECT count(*) FROM reevaluations").fetchone()[0]
    con.close()
    return {
        "episodes": episodes,
        "first_trainings": first,
        "invalid": refused,  # refused before training (search.max_trainings spends none on them)
        "reevaluations": again,
        "unique_trainings": first + again,
    }


class Study:
    def __init__(self, profile: str, out: Path, work: Path, commits: bool = False):
        self.name, self.p = profile, PROFILES[profile]
        self.commits = commits  # commit each record as it lands (the study in the repository)
        self.out, self.work = out, work
        out.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        # bench/results/end_to_end_<profile>_*.json: one record per search, the registration,
        # one record per final training (block, seed, params, FLOPs, accuracies, time)
        self.searches_path = self.file("searches.json")
        self.registered_path = self.file("registered.json")
        self.finals_path = self.file("finals.json")

    def file(self, name: str) -> Path:
        return self.out / f"end_to_end_{self.name}_{name}"

    # ------------------------------------------------------------------ 1. searches
    def searches(self) -> list[dict]:
        done = _load(self.searches_path, [])
        have = {(r["strategy"], r["seed"]) for r in done}
        for strategy, extra in self.p["strategies"].items():
            for seed in self.p["search_seeds"]:
                if (strategy, seed) in have:
                    continue
                folder = self.work / f"search_{strategy}_{seed}"
                args = [*self.p["proxy"], *self.p["search"], *extra, f"seed={seed}"]
                log(f"search {strategy} seed {seed}: search.py {' '.join(args)}")
                t = time.perf_counter()
                run("search.py", [*args, f"hydra.run.dir={folder}"])
                best = json.loads((folder / "best_block.json").read_text())
                done.append(
                    {
                        "strategy": strategy,
                        "seed": seed,
                        "nsc": best["nsc"],
                        "key": best["key"],
                        "proxy_reward": best["reward"],
                        "proxy_accuracy": best["accuracy"],
                        "evaluations": best["evaluations"],
                        "widths": best.get("widths"),
                        **_trainings(folder),
                        "wall_s": round(time.perf_counter() - t, 1),
                        "overrides": args,
                    }
                )
                _save(self.searches_path, done)
                if self.commits:
                    commit(self.searches_path, f"end to end: search {strategy} seed {seed}")
        return done

    # ------------------------------------------------------------------ 2. registration
    def hand_blocks(self) -> dict[str, list]:
        hand = self.p["hand"]
        if hand == "registered":
            blocks = json.loads((FIDELITY / "blocks.json").read_text())["blocks"]
            return {b["name"]: b["nsc"] for b in blocks if b["group"] == "hand"}
        return dict(hand)

    def register(self, searches: list[dict]) -> list[dict]:
        """The blocks to train, fixed before any final training: every returned block once (with
        the searches that returned it) and the hand-designed ones."""
        from blockqnn.space.nsc import Block

        blocks: dict[str, dict] = {}
        for s in searches:
            entry = blocks.setdefault(
                s["key"], {"key": s["key"], "nsc": s["nsc"], "kind": "searched", "returned_by": []}
            )
            entry["returned_by"].append(f"{s['strategy']}:{s['seed']}")
        for name, nsc in self.hand_blocks().items():
            key = Block.parse(nsc).key
            entry = blocks.setdefault(
                key, {"key": key, "nsc": nsc, "kind": "hand", "returned_by": []}
            )
            entry["kind"] = "hand" if not entry["returned_by"] else "searched+hand"
            entry["name"] = name
        registered = sorted(blocks.values(), key=lambda b: (b["kind"], b["key"]))
        if self.registered_path.exists():
            before = json.loads(self.registered_path.read_text())["blocks"]
            if before != registered:
                raise SystemExit(
                    f"{self.registered_path} holds another registration: never changed"
                )
            return before
        _save(
            self.registered_path,
            {"registered_at": time.strftime("%Y-%m-%d %H:%M:%S"), "blocks": registered},
        )
        if self.commits:
            commit(
                self.registered_path, "end to end: the blocks registered before any final training"
            )
        return registered

    # ------------------------------------------------------------------ 3. final trainings
    def shared_finals(self) -> dict[tuple[str, int], dict]:
        """The final trainings of the profile named by ``finals_from`` (same recipe), by
        (block key, seed); empty without one."""
        source = self.p.get("finals_from")
        if not source:
            return {}
        if PROFILES[source]["final"] != self.p["final"]:
            raise SystemExit(f"finals_from={source}: its final recipe differs from {self.name}'s")
        return {(r["key"], r["seed"]): r for r in recorded(self.out, source)[2]}

    def finals(self, registered: list[dict]) -> list[dict]:
        done = _load(self.finals_path, [])
        have = {(r["key"], r["seed"]) for r in done}
        shared = self.shared_finals()
        for seed in self.p["final_seeds"]:
            for b in registered:
                if (b["key"], seed) in have:
                    continue
                if (b["key"], seed) in shared:
                    done.append({**shared[(b["key"], seed)], "from": self.p["finals_from"]})
                    _save(self.finals_path, done)
                    continue
                folder = self.work / f"final_{b['key'][:16]}_{seed}"
                log(f"final {b.get('name', b['key'][:12])} ({b['kind']}) seed {seed}")
                t = time.perf_counter()
                nsc = json.dumps(b["nsc"], separators=(",", ":"))
                run(
                    "train.py",
                    [f"block={nsc}", f"seed={seed}", *self.p["final"], f"hydra.run.dir={folder}"],
                )
                m = json.loads((folder / "metrics.json").read_text())
                done.append(
                    {
                        "key": b["key"],
                        "block": b["nsc"],
                        "seed": seed,
                        "val_acc": m["val_acc"],
                        "test_acc": m["test_acc"],
                        "params": m["params"],
                        "flops": m["flops"],
                        "widths": m["widths"],
                        "train_s": round(m["wall_time"], 1),
                        "wall_s": round(time.perf_counter() - t, 1),
                    }
                )
                _save(self.finals_path, done)
                if self.commits:
                    commit(self.finals_path, f"end to end: final {b['key'][:12]} seed {seed}")
        return done


# ---------------------------------------------------------------------------- the analysis
def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def _ci(xs: list[float]) -> list[float] | None:
    """The 95% interval of the mean (Student t); None with one value."""
    from blockqnn.compare import mean_ci

    m, h = mean_ci(xs)
    return None if h != h else [round(m - h, 4), round(m + h, 4)]


def _against(diffs: list[float], alternative: str) -> float | None:
    """A one-sample t-test of per-search differences against 0; None below 3 runs."""
    from scipy import stats

    if len(diffs) < 3:
        return None
    if max(diffs) == min(diffs):  # every search returned the same block: no spread to test
        return 0.0 if (diffs[0] > 0 and alternative != "less") else 1.0
    return float(stats.ttest_1samp(diffs, 0.0, alternative=alternative).pvalue)


def _equivalence(diffs: list[float], bound: float) -> float | None:
    """TOST: the larger of the two one-sided p-values that the mean difference is above -bound
    and below +bound; below 0.05 the two are equivalent within the bound."""
    from scipy import stats

    if len(diffs) < 3 or max(diffs) == min(diffs):
        return None
    low = stats.ttest_1samp(diffs, -bound, alternative="greater").pvalue
    high = stats.ttest_1samp(diffs, bound, alternative="less").pvalue
    return float(max(low, high))


def analyse(
    searches: list[dict],
    registered: list[dict],
    finals: list[dict],
    final_seeds: list[int] | None = None,
) -> dict:
    """The pre-registered analysis (BENCHMARKS.md): nothing chosen on test. ``final_seeds``:
    the seeds the study trains every block under; until every registered block has all of
    them, no test figure is shown and no test is run (the test split is read once, at the end),
    only the validation accuracies of what there is."""
    from scipy import stats

    from blockqnn.compare import holm

    by_key: dict[str, dict[int, dict]] = {}
    for r in finals:
        by_key.setdefault(r["key"], {})[r["seed"]] = r
    withheld = final_seeds is not None and not all(
        s in by_key.get(b["key"], {}) for b in registered for s in final_seeds
    )
    seeds = sorted({r["seed"] for r in finals})
    # While the study runs, the seeds that every registered block has finished (a partly done
    # seed would compare some blocks on more seeds than others); before the first is finished,
    # the blocks that have what there is.
    finished = [s for s in seeds if all(s in by_key.get(b["key"], {}) for b in registered)]
    seeds = finished or seeds
    complete = {k for k, v in by_key.items() if all(s in v for s in seeds)}
    names = {b["key"]: b.get("name") or b["key"][:12] for b in registered}
    table = {
        k: {
            "name": names.get(k, k[:12]),
            "kind": next((b["kind"] for b in registered if b["key"] == k), "?"),
            "val_acc": round(_mean([v[s]["val_acc"] for s in seeds]), 4),
            "test_acc": None if withheld else round(_mean([v[s]["test_acc"] for s in seeds]), 4),
            "test_ci95": None if withheld else _ci([v[s]["test_acc"] for s in seeds]),
            "params": v[seeds[0]]["params"],
            "widths": v[seeds[0]]["widths"],
        }
        for k, v in by_key.items()
        if k in complete
    }
    hand = [b["key"] for b in registered if "hand" in b["kind"] and b["key"] in complete]
    out: dict = {"final_seeds": seeds, "blocks": table, "searches": {}}
    if not hand:
        return out
    best = max(hand, key=lambda k: table[k]["val_acc"])  # chosen on validation, never on test
    out["best_hand"] = {
        "key": best,
        "name": table[best]["name"],
        "chosen_by": "mean validation accuracy",
    }
    if withheld:
        out["test_withheld"] = f"until every registered block has final seeds {final_seeds}"
        return out

    def diffs(strategy: str) -> list[float]:
        ds = []
        for s in searches:
            if s["strategy"] == strategy and s["key"] in complete:
                ds.append(
                    _mean(
                        [
                            by_key[s["key"]][x]["test_acc"] - by_key[best][x]["test_acc"]
                            for x in seeds
                        ]
                    )
                )
        return ds

    def per_search(strategy: str) -> list[float]:
        return [
            table[s["key"]]["test_acc"]
            for s in searches
            if s["strategy"] == strategy and s["key"] in complete
        ]

    for strategy in sorted({s["strategy"] for s in searches}):
        ds = diffs(strategy)
        out["searches"][strategy] = {
            "runs": len(ds),
            "distinct_blocks": len({s["key"] for s in searches if s["strategy"] == strategy}),
            "minus_best_hand": round(_mean(ds), 4) if ds else None,
            "minus_best_hand_ci95": _ci(ds),
            "unique_trainings": round(
                _mean([s["unique_trainings"] for s in searches if s["strategy"] == strategy]), 1
            ),
        }
    q, r = diffs("qlearning"), diffs("random")
    primary_p = _against(q, "greater")
    out["primary"] = {
        "comparison": "Q-learning's returned blocks > the best hand-designed block "
        "(test accuracy, per search, paired by seed)",
        "runs": len(q),
        "difference": round(_mean(q), 4) if q else None,
        "p_one_sided": primary_p,
        "significant": primary_p is not None and primary_p < 0.05,
    }
    if primary_p is not None and primary_p >= 0.05:
        tost = _equivalence(q, EQUIVALENCE_PP)
        out["primary"]["equivalence_bound"] = EQUIVALENCE_PP
        out["primary"]["p_equivalence_tost"] = tost
        out["primary"]["equivalent"] = tost is not None and tost < 0.05
    secondary = {
        "random search's returned blocks vs the best hand-designed block (two-sided)": _against(
            r, "two-sided"
        ),
        "Q-learning vs random search, per-search test accuracy (Welch, two-sided)": (
            float(
                stats.ttest_ind(
                    per_search("qlearning"), per_search("random"), equal_var=False
                ).pvalue
            )
            if len(per_search("qlearning")) >= 3
            and len(per_search("random")) >= 3
            and len(set(per_search("qlearning") + per_search("random"))) > 1
            else None
        ),
    }
    adjusted = holm(secondary)
    out["secondary"] = {k: {"p": p, "p_holm": adjusted.get(k)} for k, p in secondary.items()}
    return out


def figure(analysis: dict, path: Path) -> None:
    """The final validation accuracies of the fidelity study's 40 pre-registered blocks, with the
    searched and the hand-designed blocks marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    population: dict[int, list[float]] = {}
    for p in sorted((FIDELITY / "final").glob("*.json")):
        rec = json.loads(p.read_text())
        if rec["status"] == "ok":
            population.setdefault(rec["index"], []).append(rec["val_acc"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if population:
        ax.hist(
            [_mean(v) for v in population.values()],
            bins=16,
            color="lightgrey",
            label="40 pre-registered blocks",
        )
    colours = {"searched": "crimson", "hand": "royalblue", "searched+hand": "purple"}
    for t in analysis.get("blocks", {}).values():
        ax.axvline(t["val_acc"], color=colours.get(t["kind"], "k"), lw=1.2, alpha=0.8)
    for kind, c in colours.items():
        ax.plot([], [], color=c, label=kind)
    ax.set(xlabel="final validation accuracy (mean over seeds)", ylabel="blocks")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(a: dict) -> str:
    lines = [
        "| block | kind | val acc | test acc (95% CI) | params | widths |",
        "|---|---|---|---|---|---|",
    ]
    for t in sorted(a.get("blocks", {}).values(), key=lambda t: -t["val_acc"]):
        ci = "" if not t["test_ci95"] else f" ({t['test_ci95'][0]:.4f}-{t['test_ci95'][1]:.4f})"
        test = "withheld" if t["test_acc"] is None else f"{t['test_acc']:.4f}{ci}"
        widths = "/".join(map(str, t["widths"]))
        lines.append(
            f"| {t['name']} | {t['kind']} | {t['val_acc']:.4f} | {test} | "
            f"{t['params']:,} | {widths} |"
        )
    lines.append(f"\nFinal seeds: {a.get('final_seeds')}.")
    if "test_withheld" in a:
        lines.append(f"Test accuracy withheld {a['test_withheld']}.")
    if "primary" in a and a["primary"]["difference"] is None:
        lines.append("Primary: no search's returned block has its final trainings yet.")
    elif "primary" in a:
        pr = a["primary"]
        lines += [
            "",
            f"Primary: {pr['comparison']}: {pr['difference']:+.4f} over {pr['runs']} searches, "
            f"one-sided p = {pr['p_one_sided']}.",
        ]
        if "p_equivalence_tost" in pr:
            lines.append(
                f"Equivalence within +-{pr['equivalence_bound']:.2f}: TOST p = {pr['p_equivalence_tost']}."
            )
        for k, v in a["secondary"].items():
            lines.append(f"- {k}: p = {v['p']}, Holm {v['p_holm']}")
    return "\n".join(lines)


def recorded(out: Path, profile: str) -> tuple[list[dict], list[dict], list[dict]]:
    """The searches, registered blocks and final trainings recorded under ``out`` (empty lists
    for what is not there yet): what the analysis and the notebook read."""
    files = {
        k: out / f"end_to_end_{profile}_{k}.json" for k in ("searches", "registered", "finals")
    }
    return (
        _load(files["searches"], []),
        _load(files["registered"], {"blocks": []})["blocks"],
        _load(files["finals"], []),
    )


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=list(PROFILES), default="cpu")
    ap.add_argument("--out", type=Path, default=None, help="default: bench/results")
    ap.add_argument("--work", type=Path, default=None, help="run folders (default: <out>/runs)")
    ap.add_argument(
        "--analyse", action="store_true", help="analyse what is recorded; train nothing"
    )
    ap.add_argument("--markdown", action="store_true", help="with --analyse: print the tables")
    args = ap.parse_args(argv)
    out = args.out or ROOT / "bench" / "results"
    study = Study(
        args.profile,
        out,
        args.work or out / "end_to_end" / f"runs_{args.profile}",
        commits=args.out is None,  # the repository's own results: committed as they land
    )
    if args.analyse:
        searches, registered, _ = recorded(out, args.profile)
    else:
        searches = study.searches()
        registered = study.register(searches)
        study.finals(registered)
    result = analyse(searches, registered, _load(study.finals_path, []), study.p["final_seeds"])
    _save(study.file("analysis.json"), result)
    figure(result, study.file("final_accuracies.png"))
    if args.markdown:
        print(markdown(result))
    return {
        "bench": "end_to_end",
        "profile": args.profile,
        "searches": len(searches),
        "registered": len(registered),
        "finals": len(_load(study.finals_path, [])),
        "primary": result.get("primary"),
    }


if __name__ == "__main__":
    print(json.dumps(main()))

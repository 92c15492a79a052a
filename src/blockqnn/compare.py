"""Several searches compared: the runs of a sweep folder (or a list of run folders), grouped by
the overrides that differ between them (seeds pooled within a group), with each run's
best-so-far and top-10 curves, the per-group means and 95% bands, the final figures and paired
tests where seeds pair. Used by ``python -m blockqnn.report`` and by bench/studies.py."""

from __future__ import annotations

import bisect
import json
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from blockqnn.errors import ConfigError
from blockqnn.result import is_measured
from blockqnn.search.store import read_run

SWEEP_DEPTH = 3  # how deep under a given folder run folders are looked for


def mean_ci(values) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (Student t); nan with one value."""
    # lazy: SciPy only for the statistics
    from scipy import stats

    a = np.asarray(list(values), dtype=float)
    if len(a) == 0:
        return float("nan"), float("nan")
    if len(a) < 2:
        return float(a.mean()), float("nan")
    return float(a.mean()), float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))


#: The fewest pairs a Wilcoxon signed-rank test is run on: at 5 pairs or fewer its smallest
#: two-sided p-value is 0.0625, so it cannot reach 0.05 and is no test at all.
MIN_WILCOXON_PAIRS = 6


def paired_p(a: list[float], b: list[float]) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired values; None (no test) with fewer than
    :data:`MIN_WILCOXON_PAIRS` pairs."""
    # lazy: SciPy only for the statistics
    from scipy.stats import wilcoxon

    if len(a) < MIN_WILCOXON_PAIRS:
        return None
    if all(x == y for x, y in zip(a, b)):
        return 1.0
    return float(wilcoxon(a, b).pvalue)


def holm(pvalues: dict) -> dict:
    """Holm's step-down adjustment of a family of p-values (key -> p; NaN and None left out):
    key -> adjusted p, each at least its raw p, monotone in the raw order."""
    items = sorted((p, k) for k, p in pvalues.items() if p is not None and p == p)
    out, running, m = {}, 0.0, len(items)
    for i, (p, k) in enumerate(items):
        running = max(running, min(1.0, (m - i) * p))
        out[k] = running
    return out


# --- one run --------------------------------------------------------------------------------


def curves(rows: list[dict]) -> dict:
    """Per-episode figures of one search (episodes in id order): the best measured reward so far
    and the mean of the ten best distinct measured blocks so far (nan before the first), the
    mean reward per epsilon stage (first stage first), and the trainings (measured, neither
    reused nor predicted)."""
    best, top, first_seen = float("-inf"), [], set()
    best_curve, top_curve = np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    trained = 0
    stages: dict[float, list[float]] = {}
    for i, r in enumerate(rows):
        if r["reward"] is not None and r["status"] not in ("running", "failed"):
            stages.setdefault(r["epsilon"], []).append(r["reward"])
            if is_measured(r):
                best = max(best, r["reward"])
                if r["key"] not in first_seen:
                    first_seen.add(r["key"])
                    bisect.insort(top, -r["reward"])
                    del top[10:]
                if not r.get("reused"):
                    trained += 1
        if top:
            best_curve[i] = best
            top_curve[i] = -sum(top) / len(top)
    order = sorted(stages, reverse=True)
    return {
        "episodes": len(rows),
        "best_curve": best_curve,
        "top10_curve": top_curve,
        "stages": {e: float(np.mean(stages[e])) for e in order},
        "trained": trained,
        "predicted": sum(int(bool(r.get("predicted"))) for r in rows),
    }


def final(c: dict, key: str) -> float:
    """The last value of a run's ``best_curve`` or ``top10_curve`` (nan without episodes)."""
    return float(c[key][-1]) if c["episodes"] else float("nan")


def summarize(rows: list[dict], grid: int = 60) -> dict:
    """One search's figures in JSON form: the curves at ``grid`` points, the final best and
    top-10, the first and last stage means."""
    c = curves(rows)
    n = c["episodes"]
    points = sorted({max(1, round(n * (i + 1) / grid)) for i in range(grid)}) if n else []
    stages = c["stages"]
    means = list(stages.values())
    return {
        "episodes": n,
        "points": points,
        "best_curve": [float(c["best_curve"][p - 1]) for p in points],
        "top10_curve": [float(c["top10_curve"][p - 1]) for p in points],
        "best": final(c, "best_curve"),
        "top10": final(c, "top10_curve"),
        "stages": {str(e): v for e, v in stages.items()},
        "first": means[0] if means else float("nan"),
        "last": means[-1] if means else float("nan"),
        "trained": c["trained"],
        "predicted": c["predicted"],
    }


def _overrides(run_dir: Path) -> dict[str, str] | None:
    """The command-line overrides Hydra saved for this run (``.hydra/overrides.yaml``)."""
    path = run_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None

    out = {}
    for item in OmegaConf.to_container(OmegaConf.load(path)) or []:
        key, _, value = str(item).partition("=")
        out[key.lstrip("+~")] = value
    return out


def _flatten(d, prefix: str = "") -> dict[str, str]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = json.dumps(d)
    return out


def load(run_dir: str | Path) -> dict:
    """A run folder's episodes, its fingerprint (the settings stored in search.db), its seed
    and its overrides (read-only)."""

    run_dir = Path(run_dir)
    saved = read_run(run_dir, agent=False)
    rows, meta = saved["episodes"], saved["meta"]
    fp = json.loads(meta.get("fingerprint", "{}"))
    return {
        "run_dir": run_dir,
        "episodes": rows,
        "reevaluations": saved.get("reevaluations", []),
        "fingerprint": fp,
        "seed": fp.get("seed"),
        "overrides": _overrides(run_dir),
    }


def find_runs(paths: list[str | Path]) -> list[Path]:
    """Run folders named by ``paths``: each is a run folder (it holds search.db) or a folder
    with run folders under it (a Hydra sweep folder), searched ``SWEEP_DEPTH`` levels down."""
    found: list[Path] = []
    for p in map(Path, paths):
        if not p.is_dir():
            raise ConfigError(f"{p} is not a folder")
        if (p / "search.db").is_file():
            found.append(p)
            continue
        under = sorted(
            {
                db.parent
                for depth in range(1, SWEEP_DEPTH + 1)
                for db in p.glob("/".join(["*"] * depth) + "/search.db")
            },
            key=lambda q: [
                (0, int(s), "") if s.isdigit() else (1, 0, s) for s in q.relative_to(p).parts
            ],
        )
        if not under:
            raise ConfigError(
                f"{p} has no search.db and no run folders under it: not a run or sweep folder"
            )
        found.extend(under)
    return list(dict.fromkeys(found))


def _ignored(key: str) -> bool:
    return key == "seed" or key.startswith("hydra.") or key.endswith(".seed")


def group_runs(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs grouped by the settings that differ between them, seeds pooled. The labels come
    from the overrides that differ (``agent=random``); where the runs' overrides are unknown or
    name no difference, from the stored settings that differ (``agent.name="random"``)."""

    def differing(settings: list[dict[str, str] | None]) -> list[str]:
        keys = sorted({k for s in settings if s for k in s if not _ignored(k)})
        return [k for k in keys if len({(s or {}).get(k) for s in settings}) > 1]

    overrides = [r["overrides"] for r in runs]
    keys = differing(overrides) if all(o is not None for o in overrides) else []
    source = overrides
    if not keys:
        source = [_flatten(r["fingerprint"]) for r in runs]
        keys = differing(source)
        named = {k[: -len(".name")] for k in keys if k.endswith(".name")}  # agent.name says it all
        keys = [
            k for k in keys if k.endswith(".name") or not any(k.startswith(f"{n}.") for n in named)
        ]
    groups: dict[str, list[dict]] = {}
    for run, s in zip(runs, source):
        label = ", ".join(f"{k}={s[k]}" for k in keys if k in s) or "all runs"
        groups.setdefault(label, []).append(run)
    return dict(sorted(groups.items()))


# --- several runs --------------------------------------------------------------------------


def band(series: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Episodes 1..n (n the shortest series), the mean over series and its 95% half-width."""
    # lazy: SciPy only for the statistics
    from scipy import stats

    n = min(len(s) for s in series)
    a = np.vstack([s[:n] for s in series])
    mean = np.nanmean(a, axis=0) if n else np.zeros(0)
    if len(series) > 1:
        half = (
            stats.t.ppf(0.975, len(series) - 1)
            * np.nanstd(a, axis=0, ddof=1)
            / np.sqrt(len(series))
        )
    else:
        half = np.zeros(n)
    return np.arange(1, n + 1), mean, half


def compare(groups: dict[str, list[dict]], reference: str | None = None) -> dict:
    """Each group's final figures (mean and 95% half-width over its runs) and, against the
    reference group (the first unless named), paired Wilcoxon tests over the seeds both have."""
    if reference is not None and reference not in groups:
        raise ConfigError(f"no group {reference!r}; the groups are: {', '.join(groups)}")
    reference = reference or next(iter(groups))
    out: dict[str, dict] = {}
    finals = {}
    for name, runs in groups.items():
        cs = [r.setdefault("curves", curves(r["episodes"])) for r in runs]
        f = {
            "best": [final(c, "best_curve") for c in cs],
            "top10": [final(c, "top10_curve") for c in cs],
            "trained": [c["trained"] for c in cs],
        }
        stage_lists = [list(c["stages"].values()) for c in cs if c["stages"]]
        f["last_minus_first"] = [s[-1] - s[0] for s in stage_lists]
        finals[name] = {r["seed"]: (b, t) for r, b, t in zip(runs, f["best"], f["top10"])}
        g = {k: mean_ci(v) for k, v in f.items()}
        g["runs"] = len(runs)
        g["seeds"] = sorted(r["seed"] for r in runs if r["seed"] is not None)
        g["episodes"] = [c["episodes"] for c in cs]
        stages: dict[float, list[float]] = {}
        for c in cs:
            for e, m in c["stages"].items():
                stages.setdefault(e, []).append(m)
        g["stages"] = {e: float(np.mean(v)) for e, v in sorted(stages.items(), reverse=True)}
        out[name] = g
    ref = finals[reference]
    for name, g in out.items():
        g["reference"] = name == reference
        if name == reference:
            continue
        common = sorted(s for s in finals[name] if s in ref and s is not None)
        g["paired_seeds"] = len(common)
        for i, k in enumerate(("best", "top10")):
            g[f"p_{k}"] = paired_p(
                [ref[s][i] for s in common], [finals[name][s][i] for s in common]
            )
    return {"reference": reference, "groups": out}


def fig_curves(groups: dict[str, list[dict]], result: dict):
    """Best-so-far and top-10 mean against episodes (per group: mean and 95% band), and the mean
    reward per epsilon stage (``result``: :func:`compare` of the same groups)."""
    # lazy: plotting only where a figure is drawn (master start-up)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    lims: list[list[float]] = [[], []]
    for name, runs in groups.items():
        cs = [r["curves"] for r in runs]
        for ax, key in zip(axes[:2], ("best_curve", "top10_curve")):
            x, m, h = band([c[key] for c in cs])
            (line,) = ax.plot(x, m, label=f"{name} ({len(cs)})")
            ax.fill_between(x, m - h, m + h, alpha=0.2, color=line.get_color())
            seen = m[len(m) // 20 :]
            lims[key == "top10_curve"] += (
                [float(np.nanmin(seen)), float(np.nanmax(seen))] if len(seen) else []
            )
        stages = result["groups"][name]["stages"]
        axes[2].plot(list(stages), list(stages.values()), marker="o", label=name)
    axes[0].set(title="best reward so far (mean, 95% band)", xlabel="episode", ylabel="reward")
    axes[1].set(title="top-10 mean of distinct blocks (mean, 95% band)", xlabel="episode")
    axes[2].set(title="mean reward per epsilon stage", xlabel="epsilon (falls to the right)")
    axes[2].invert_xaxis()
    for ax, lim in zip(
        axes[:2], lims
    ):  # the means decide the scale; a band of two seeds may overflow it
        if lim and np.isfinite(lim).all():
            lo, hi = min(lim), max(lim)
            pad = 0.5 * (hi - lo) + 0.005
            ax.set_ylim(lo - pad, hi + pad)
    axes[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig

"""End to end: a real search, then its best blocks trained in full against hand-designed and
random blocks at matched parameter counts, on held-out test data, and transferred to CIFAR-10.

    python bench/end_to_end.py                 # the CPU pipeline (resumable; hours, in the background)
    python bench/end_to_end.py --profile tiny  # the same steps at a tiny size (the test)
    python bench/end_to_end.py --profile gpu   # the GPU variant: CIFAR-10 at the paper's network size, ~8 min
    python bench/end_to_end.py --profile gpu --smoke   # that variant's steps on the CPU, in seconds

Steps (each skipped when its result is already recorded, so rerunning continues):
  1. search: ``search.py`` with real training on the profile's proxy (Fashion-MNIST for the CPU
     profile: the bench proxy, 5,000 images at 14 x 14, one epoch), ``executor=pool``, re-evaluating
     its leaders; the same with ``predictor=forest`` (the faster version);
  2. the blocks: the search's best 3 (topk.json, ranked by their means), the faster version's
     best, the hand-designed presets (resnet_basic, plain, inception, densenet_like,
     blockqnn_paper_like) and 3 random blocks of the space (a seeded random agent);
  3. each block's width chosen so its network has the reference's parameter count within 10%
     (the reference: resnet_basic at the profile's width), then ``train.py`` on the full
     training set under one recipe, 3 seeds, test accuracy on the test split (never used before);
  4. the transfer: the same blocks on the CIFAR-10 JPEGs of ../shared/data (a stated subset).

Raw records, one per training (block, seed, params, FLOPs, test accuracy, time), in
``bench/results/end_to_end_<profile>.json``; the summary (95% intervals, paired comparisons) in
``bench/results/end_to_end_<profile>_summary.json``; the figure beside it. Prints one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10_jpg.tar.gz"
HAND = ("resnet_basic", "plain", "inception", "densenet_like", "blockqnn_paper_like")

#: Sizes per profile (why these: BENCHMARKS.md "End to end").
PROFILES = {
    "cpu": {
        "search": [
            "experiment=bench_proxy",
            "executor=pool",
            "logger=none",
            "agent.epsilon_schedule=[[1.0,14],[0.7,5],[0.4,5],[0.1,6]]",
            "agent.batch_size=8",
            "search.reevaluate.top=5",
            "search.reevaluate.repeats=2",
        ],
        "fast_search": ["predictor=forest"],
        # Sizes for ~4 hours of the 2 CPU cores: the search's own network (N = 1, 3 stages) at the
        # parameter count of resnet_basic at F = 16 (~0.1M), Fashion-MNIST at the search's 14 x 14,
        # all 58,800 training images (1,200 kept for validation), 2 epochs; the transfer on a
        # class-stratified 5,000 CIFAR-10 training images at 32 x 32, 2 epochs, all 10,000 test
        # images, seeds 0 and 1 (cut from 10,000 images and 3 seeds when the run shared the 2
        # cores with the test suite's runs).
        "max_layers": 10,
        "width": 16,
        "blocks_per_stage": 1,
        "seeds": [0, 1, 2],
        "random_blocks": 3,
        "top": 3,
        "train": [
            "data=fashion_mnist",
            "data.resize=14",
            "data.val_fraction=0.02",
            "train.epochs=2",
            "train.batch_size=128",
            "train.export=false",
            "logger=csv",
            "trainer.deterministic=false",
        ],
        "input": (1, 14),
        "transfer": {"subset": 5000, "size": 32, "epochs": 2, "seeds": [0, 1]},
    },
    "tiny": {
        "search": [
            "debug=smoke",
            "logger=none",
            "agent.epsilon_schedule=[[1.0,2],[0.3,1]]",
            "agent.batch_size=4",
            "search.reevaluate.top=2",
            "search.reevaluate.repeats=1",
        ],
        "fast_search": ["predictor=forest", "search.predictor.min_measured=4"],
        "max_layers": 4,
        "width": 16,
        "blocks_per_stage": 1,
        "seeds": [0],
        "random_blocks": 1,
        "top": 1,
        "hand": ("resnet_basic", "plain"),
        "train": [
            "data=digits",
            "train.epochs=1",
            "train.batch_size=64",
            "train.export=false",
            "logger=none",
        ],
        "input": (1, 8),
        "transfer": {"subset": 200, "size": 16, "epochs": 1},
    },
    "gpu": {
        # CIFAR-10 JPEGs: a short real search at the paper's network (F=32, N=2, 23 layers, bf16),
        # then its best block and resnet_basic trained on all 50,000 images: about 8 minutes.
        "search": [
            "experiment=search_image_folder",
            "data.root={cifar}",
            "trainer=gpu",
            "logger=none",
            "agent.epsilon_schedule=[[1.0,2],[0.5,1],[0.1,1]]",
            "agent.batch_size=16",
            "recipe.epochs=2",
            "data.subset=10000",
            "search.reevaluate.top=3",
            "search.reevaluate.repeats=1",
        ],
        "fast_search": None,
        "max_layers": 23,
        "width": 32,
        "blocks_per_stage": 2,
        "seeds": [0],
        "random_blocks": 1,
        "top": 1,
        "hand": ("resnet_basic",),
        "train": [
            "trainer=gpu",
            "train.epochs=6",
            "train.batch_size=256",
            "train.export=false",
            "logger=none",
        ],
        "input": (3, 32),
        "transfer": {"subset": None, "size": 32, "epochs": 6},
        "cifar_root": True,
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str]) -> None:
    proc = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} ... failed:\n{proc.stderr[-3000:]}")


def matched_width(
    nsc: list, target: int, in_channels: int, size: int, blocks: int, classes: int = 10
) -> tuple[int, int]:
    """The width whose network's parameter count is nearest ``target`` (and that count)."""
    from blockqnn.space.cost import network_cost
    from blockqnn.space.nsc import Block

    block = Block.parse(nsc)
    best = None
    for width in range(2, 257):
        params = network_cost(
            block,
            in_channels=in_channels,
            input_size=size,
            blocks_per_stage=blocks,
            width=width,
            num_classes=classes,
        )[1]
        if best is None or abs(params - target) < abs(best[1] - target):
            best = (width, params)
        if params > 2 * target:
            break
    return best


def mean_ci(xs: list[float]) -> tuple[float, float]:
    from scipy import stats

    n = len(xs)
    m = sum(xs) / n
    if n < 2:
        return m, float("nan")
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1))
    return m, float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n))


class Pipeline:
    def __init__(self, profile: str, out: Path, work: Path, smoke: bool):
        self.name, self.p = profile, dict(PROFILES[profile])
        if smoke:  # the GPU variant's steps on the CPU at a tiny size
            self.p.update(
                PROFILES["tiny"],
                transfer=None,
                search=[*PROFILES["tiny"]["search"]],
                fast_search=None,
                train=[*PROFILES["tiny"]["train"]],
            )
        self.out, self.work = out, work
        self.records_path = out / f"end_to_end_{profile}{'_smoke' if smoke else ''}.json"
        self.records = (
            json.loads(self.records_path.read_text()) if self.records_path.exists() else []
        )
        self.blocks_path = out / f"end_to_end_{profile}{'_smoke' if smoke else ''}_blocks.json"
        self.cifar = None  # the unpacked CIFAR-10 JPEG folder, when a step needs it

    def save(self) -> None:
        self.records_path.write_text(json.dumps(self.records, indent=1) + "\n")

    # ------------------------------------------------------------------ 1. the searches
    def searches(self) -> dict:
        if self.blocks_path.exists():
            return json.loads(self.blocks_path.read_text())
        found = {}
        for tag, extra in (("search", []), ("fast", self.p["fast_search"])):
            if extra is None:
                continue
            folder = self.work / tag
            t = time.perf_counter()
            args = [a.replace("{cifar}", str(self.cifar)) for a in self.p["search"] + extra]
            log(f"{tag}: search.py {' '.join(args)}")
            run(["search.py", *args, f"hydra.run.dir={folder}"])
            top = json.loads((folder / "topk.json").read_text())
            found[tag] = {
                "top": top[: self.p["top"] if tag == "search" else 1],
                "wall_s": round(time.perf_counter() - t, 1),
                "episodes": _episodes(folder),
                "trainings": _trainings(folder),
            }
        from blockqnn.agent import RandomAgent

        agent = RandomAgent(max_layers=self.p["max_layers"], seed=12345)
        found["random"] = [agent.ask().to_list() for _ in range(self.p["random_blocks"])]
        self.blocks_path.write_text(json.dumps(found, indent=1) + "\n")
        return found

    def blocks(self, found: dict) -> list[tuple[str, str, list]]:
        """(name, kind, nsc) of every block to train."""
        from blockqnn.space.presets import PRESETS

        out = [
            (f"searched_{i + 1}", "searched", t["nsc"])
            for i, t in enumerate(found["search"]["top"])
        ]
        if "fast" in found:
            out.append(("faster_1", "faster", found["fast"]["top"][0]["nsc"]))
        out += [(name, "hand", PRESETS[name]["nsc"]) for name in self.p.get("hand", HAND)]
        out += [(f"random_{i + 1}", "random", nsc) for i, nsc in enumerate(found["random"])]
        return out

    # ------------------------------------------------------------------ 2-3. full trainings
    def train_all(
        self,
        stage: str,
        blocks: list,
        data: list[str],
        in_channels: int,
        size: int,
        seeds: list[int] | None = None,
    ) -> None:
        from blockqnn.space.presets import preset

        target = _params(
            preset("resnet_basic").to_list(),
            self.p["width"],
            in_channels,
            size,
            self.p["blocks_per_stage"],
        )
        for seed in seeds if seeds is not None else self.p["seeds"]:
            for name, kind, nsc in blocks:
                if any(
                    r["stage"] == stage and r["name"] == name and r["seed"] == seed
                    for r in self.records
                ):
                    continue
                width, params = matched_width(
                    nsc, target, in_channels, size, self.p["blocks_per_stage"]
                )
                folder = self.work / f"{stage}_{name}_{seed}"
                t = time.perf_counter()
                log(
                    f"{stage}: {name} seed {seed}, width {width} ({params:,} params, target {target:,})"
                )
                run(
                    [
                        "train.py",
                        f"block={json.dumps(nsc, separators=(',', ':'))}",
                        f"seed={seed}",
                        f"network.width={width}",
                        f"network.blocks_per_stage={self.p['blocks_per_stage']}",
                        # a stage with its own data (the transfer) replaces the recipe's data keys
                        *[
                            o
                            for o in self.p["train"]
                            if not (data and o.startswith(("data=", "data.")))
                        ],
                        *data,
                        f"hydra.run.dir={folder}",
                    ]
                )
                m = json.loads((folder / "metrics.json").read_text())
                self.records.append(
                    {
                        "stage": stage,
                        "name": name,
                        "kind": kind,
                        "seed": seed,
                        "block": nsc,
                        "width": width,
                        "params": m["params"],
                        "params_target": target,
                        "flops": m["flops"],
                        "test_acc": m["test_acc"],
                        "val_acc": m["val_acc"],
                        "epochs": m["epochs"],
                        "train_s": round(m["wall_time"], 1),
                        "wall_s": round(time.perf_counter() - t, 1),
                    }
                )
                self.save()

    def unpack(self) -> Path | None:
        """The CIFAR-10 JPEG folder (unpacked once into the work folder, never the repository)."""
        if not ARCHIVE.exists():
            return None
        folder = self.work / "cifar10"
        if not (folder / "train").is_dir():
            log(f"unpacking {ARCHIVE} into {folder}")
            with tarfile.open(ARCHIVE) as tar:
                tar.extractall(folder, filter="data")
        if not (folder / "train").is_dir():  # the archive's own top folder
            folder = next(p for p in folder.iterdir() if (p / "train").is_dir())
        self.cifar = folder
        return folder

    def transfer_data(self) -> list[str] | None:
        tr = self.p.get("transfer")
        if not tr or self.unpack() is None:
            return None
        root = self.cifar if tr["subset"] is None else self.subset_folder(int(tr["subset"]))
        return [
            "data=image_folder",
            f"data.root={root}",
            f"data.input_size={tr['size']}",
            f"train.epochs={tr['epochs']}",
        ]

    def subset_folder(self, n: int) -> Path:
        """A fixed class-stratified ``n`` of the CIFAR-10 training images (seed 0, the same for
        every block and seed) as links in an ImageNet-layout folder beside the whole test split:
        each training then decodes these ``n`` images, not all 50,000."""
        folder = self.work / f"cifar10_subset_{n}"
        if (folder / "train").is_dir():
            return folder
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        classes = sorted(p for p in (self.cifar / "train").iterdir() if p.is_dir())
        rng = random.Random(0)
        for i, c in enumerate(classes):
            files = sorted(c.iterdir())
            k = n // len(classes) + (1 if i < n % len(classes) else 0)
            (tmp / "train" / c.name).mkdir(parents=True)
            for f in rng.sample(files, k):
                (tmp / "train" / c.name / f.name).symlink_to(f.resolve())
        (tmp / "test").symlink_to((self.cifar / "test").resolve())
        tmp.rename(folder)
        return folder

    # ------------------------------------------------------------------ 5. the summary
    def summary(self) -> dict:
        out = {"profile": self.name, "trainings": len(self.records)}
        for stage in sorted({r["stage"] for r in self.records}):
            rs = [r for r in self.records if r["stage"] == stage]
            by = {}
            for r in rs:
                by.setdefault(r["name"], []).append(r)
            table = {}
            for name, group in by.items():
                m, hw = mean_ci([r["test_acc"] for r in group])
                off = group[0]["params"] / group[0]["params_target"] - 1
                table[name] = {
                    "params_vs_target": round(off, 3),
                    "matched_within_10pct": abs(off) <= 0.1,
                    "kind": group[0]["kind"],
                    "test_acc": round(m, 4),
                    "ci95": round(hw, 4),
                    "seeds": len(group),
                    "params": group[0]["params"],
                    "flops": group[0]["flops"],
                    "train_s": round(sum(r["train_s"] for r in group) / len(group), 1),
                }
            hand = [n for n, t in table.items() if t["kind"] == "hand"]
            best_hand = max(hand, key=lambda n: table[n]["test_acc"]) if hand else None
            searched = [n for n, t in table.items() if t["kind"] == "searched"]
            randoms = [n for n, t in table.items() if t["kind"] == "random"]
            comp = {}
            if best_hand and searched:
                comp["searched_vs_best_hand"] = _paired(by, searched, [best_hand])
            if randoms and searched:
                comp["searched_vs_random"] = _paired(by, searched, randoms)
            out[stage] = {"blocks": table, "best_hand": best_hand, "comparisons": comp}
        return out


def _paired(by: dict, a: list[str], b: list[str]) -> dict:
    """Mean over seeds of (mean test accuracy of group a) - (of group b), paired by seed, with a
    95% interval and a two-sided paired t-test (seeds pair: the same data order and init seed)."""
    from scipy import stats

    seeds = sorted({r["seed"] for n in a + b for r in by[n]})
    diffs, xa, xb = [], [], []
    for s in seeds:
        va = [r["test_acc"] for n in a for r in by[n] if r["seed"] == s]
        vb = [r["test_acc"] for n in b for r in by[n] if r["seed"] == s]
        if va and vb:
            xa.append(sum(va) / len(va))
            xb.append(sum(vb) / len(vb))
            diffs.append(xa[-1] - xb[-1])
    m, hw = mean_ci(diffs) if diffs else (float("nan"), float("nan"))
    p = float(stats.ttest_rel(xa, xb).pvalue) if len(diffs) >= 2 else float("nan")
    return {
        "a": a,
        "b": b,
        "diff": round(m, 4),
        "ci95": round(hw, 4),
        "p_paired_t": round(p, 4),
        "seeds": len(diffs),
    }


def _episodes(folder: Path) -> int:
    import sqlite3

    con = sqlite3.connect(folder / "search.db")
    n = con.execute("SELECT count(*) FROM episodes").fetchone()[0]
    con.close()
    return n


def _trainings(folder: Path) -> int:
    import sqlite3

    con = sqlite3.connect(folder / "search.db")
    n = con.execute("SELECT count(*) FROM episodes WHERE reused = 0 AND predicted = 0").fetchone()[
        0
    ]
    n += con.execute("SELECT count(*) FROM reevaluations").fetchone()[0]
    con.close()
    return n


def _params(nsc: list, width: int, in_channels: int, size: int, blocks: int) -> int:
    from blockqnn.space.cost import network_cost
    from blockqnn.space.nsc import Block

    return network_cost(
        Block.parse(nsc),
        in_channels=in_channels,
        input_size=size,
        blocks_per_stage=blocks,
        width=width,
        num_classes=10,
    )[1]


def figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in summary if isinstance(summary[s], dict) and "blocks" in summary[s]]
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(6 * len(stages), 4.2), squeeze=False)
    colours = {"searched": "crimson", "faster": "darkorange", "hand": "royalblue", "random": "grey"}
    for ax, stage in zip(axes[0], stages):
        for name, t in summary[stage]["blocks"].items():
            ax.errorbar(
                t["params"] / 1e3,
                t["test_acc"],
                yerr=None if t["ci95"] != t["ci95"] else t["ci95"],
                fmt="o",
                color=colours[t["kind"]],
                capsize=3,
            )
            ax.annotate(
                name,
                (t["params"] / 1e3, t["test_acc"]),
                fontsize=7,
                xytext=(4, 2),
                textcoords="offset points",
            )
        ax.set(
            xlabel="parameters (thousands)",
            ylabel="test accuracy (mean, 95% CI over seeds)",
            title=stage,
        )
    handles = [plt.Line2D([], [], marker="o", ls="", color=c, label=k) for k, c in colours.items()]
    axes[0][0].legend(handles=handles, fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(summary: dict) -> str:
    """The summary's tables and paired comparisons as Markdown (for BENCHMARKS.md)."""
    out = []
    for stage in [s for s in summary if isinstance(summary[s], dict) and "blocks" in summary[s]]:
        st = summary[stage]
        out += [
            f"**{stage}** (best hand-designed: {st['best_hand']})",
            "",
            "| block | kind | test accuracy (mean +- 95% CI) | seeds | params (vs target) | MFLOPs | train s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, t in sorted(st["blocks"].items(), key=lambda kv: -kv[1]["test_acc"]):
            ci = "" if t["ci95"] != t["ci95"] else f" +- {t['ci95']:.4f}"
            flag = "" if t["matched_within_10pct"] else " (not within 10%)"
            out.append(
                f"| {name} | {t['kind']} | {t['test_acc']:.4f}{ci} | {t['seeds']} | "
                f"{t['params']:,} ({t['params_vs_target']:+.1%}){flag} | {t['flops'] / 1e6:.2f} | "
                f"{t['train_s']:.0f} |"
            )
        out.append("")
        for name, c in st["comparisons"].items():
            out.append(
                f"- {name.replace('_', ' ')}: {c['diff']:+.4f} +- {c['ci95']:.4f} "
                f"(paired over {c['seeds']} seeds, p = {c['p_paired_t']})"
            )
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", choices=list(PROFILES), default="cpu")
    ap.add_argument(
        "--smoke", action="store_true", help="the profile's steps at a tiny size, on the CPU"
    )
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument(
        "--summary-only", action="store_true", help="aggregate what is recorded, train nothing"
    )
    ap.add_argument("--markdown", action="store_true", help="with --summary-only: print tables")
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="run folders (default: bench/results/end_to_end/runs)",
    )
    args = ap.parse_args(argv)
    work = args.work or (
        ROOT
        / "bench"
        / "results"
        / "end_to_end"
        / "runs"
        / (args.profile + ("_smoke" if args.smoke else ""))
    )
    work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pipe = Pipeline(args.profile, args.out, work, args.smoke)
    t = time.perf_counter()
    if pipe.p.get("cifar_root") and not args.smoke and pipe.unpack() is None:
        raise SystemExit(f"the GPU profile needs {ARCHIVE}")
    if args.summary_only:
        found = json.loads(pipe.blocks_path.read_text()) if pipe.blocks_path.exists() else {}
        summary = pipe.summary()
        summary["searches"] = {
            k: {kk: vv for kk, vv in v.items() if kk != "top"}
            for k, v in found.items()
            if k != "random"
        }
        base = pipe.records_path.with_suffix("")
        Path(f"{base}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
        figure(summary, Path(f"{base}.png"))
        if args.markdown:
            print(markdown(summary))
            sys.exit(0)
        return summary
    found = pipe.searches()
    blocks = pipe.blocks(found)
    c, size = pipe.p["input"]
    if pipe.p.get("cifar_root") and not args.smoke:
        data = pipe.transfer_data() or []
        pipe.train_all("cifar10", blocks, data, 3, 32)
    else:
        pipe.train_all("main", blocks, [], c, size)
        transfer = pipe.transfer_data()
        if transfer is not None:
            tr = pipe.p["transfer"]
            pipe.train_all("cifar10_transfer", blocks, transfer, 3, tr["size"], tr.get("seeds"))
    summary = pipe.summary()
    summary["searches"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "top"}
        for k, v in found.items()
        if k != "random"
    }
    summary["wall_s_this_run"] = round(time.perf_counter() - t, 1)
    base = pipe.records_path.with_suffix("")
    Path(f"{base}_summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    figure(summary, Path(f"{base}.png"))
    return summary


if __name__ == "__main__":
    print(json.dumps(main()))

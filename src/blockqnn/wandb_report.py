"""A W&B report of a search or a sweep, built with wandb-workspaces (W&B's reports as code).

    python -m blockqnn.wandb_report <entity>/<project> [--group <sweep>] [--title ...]
    python -m blockqnn.wandb_report <entity>/<project> --runs <run folder>... [--out report.json]

What appears: reward against episode and the best-so-far per run, grouped by the overrides that
differ between the runs (as ``python -m blockqnn.report`` groups them; by agent when none
differ); the mean reward of each epsilon stage (the paper's figure); a table of the runs (best
reward, accuracy, params, FLOPs, NSC, trained / reused / predicted counts); the best blocks'
drawings; a parallel-coordinates panel over the swept overrides and the best reward.

The runs are read from W&B (with credentials: the project's runs, or those of ``--group``) or
from local run folders (``--runs``: their offline W&B files, before or without ``wandb sync``).
Every panel names only keys those runs logged (checked: a key that no run logged is left out
and said). With credentials the report is saved and its URL printed; without, the command says
so and writes the report's definition (its panels and keys, JSON) to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from blockqnn.errors import ConfigError
from blockqnn.search.loggers import _wandb_login, run_id
from blockqnn.wandb_files import run_contents

#: Summary keys of the runs table, in order (what the W&B logger writes at the end of a search).
TABLE = (
    "best_reward",
    "best_reward_se",
    "best_evaluations",
    "best_accuracy",
    "best_params",
    "best_flops",
    "best_nsc",
    "trained",
    "invalid_total",
    "reused_total",
    "predicted_total",
)
IGNORED = ("seed", "hydra", "paths", "task_name")  # config keys never used to group (seeds pool)


def runs_from_folders(folders: list[Path]) -> list[dict]:
    """Each local run folder's W&B run (its offline files merged): id, history keys, summary,
    flat config, group."""

    out = []
    for folder in folders:
        rid = run_id(folder)
        files = sorted(
            p
            for p in (Path(folder) / "wandb").glob(f"*-{rid}*/run-{rid}.wandb")
            if p.parent.name != "latest-run"
        )
        if not files:
            raise ConfigError(f"{folder} holds no W&B run files (was it run with logger=wandb?)")
        merged: dict[str, Any] = {
            "id": rid,
            "folder": str(folder),
            "history": set(),
            "summary": {},
            "config": {},
            "group": None,
        }
        for f in files:
            c = run_contents(f)
            merged["history"] |= c["history"]
            merged["summary"].update(c["summary"])
            merged["config"].update(c["config"])
            merged["group"] = merged["group"] or c["group"]
        out.append(merged)
    return out


def _flatten(config: dict) -> dict[str, Any]:
    """A nested config with its keys joined by dots."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    walk("", config)
    return flat


def runs_from_wandb(entity: str, project: str, group: str | None) -> list[dict]:
    # lazy: wandb takes a second to import; only logger=wandb needs it
    import wandb

    api = wandb.Api()
    filters = {"group": group} if group else {}
    out = []
    for run in api.runs(f"{entity}/{project}", filters=filters):
        flat = _flatten(dict(run.config))
        keys = (
            set(run.history(samples=10, pandas=False)[0].keys())
            if run.history(samples=1, pandas=False)
            else set()
        )
        out.append(
            {
                "id": run.id,
                "history": keys,
                "summary": dict(run.summary),
                "config": flat,
                "group": run.group,
            }
        )
    if not out:
        raise ConfigError(f"no runs in {entity}/{project}" + (f" group {group}" if group else ""))
    return out


def swept(runs: list[dict]) -> list[str]:
    """Config keys whose values differ between the runs (seeds and paths left out: seeds pool)."""
    keys = set().union(*(r["config"] for r in runs))
    out = []
    for k in sorted(keys):
        if k.split(".")[0] in IGNORED or k.endswith("_target_"):
            continue
        values = {json.dumps(r["config"].get(k), sort_keys=True, default=str) for r in runs}
        if len(values) > 1:
            out.append(k)
    return out


def definition(runs: list[dict], entity: str, project: str, group: str | None, title: str) -> dict:
    """The report as data: its runset and panels, each panel with the keys it plots. Keys no
    run logged are dropped (and listed under ``dropped``)."""
    history = set().union(*(r["history"] for r in runs))
    summary = set().union(*(r["summary"] for r in runs))
    by = swept(runs)
    groupby = by or (["agent.name"] if any("agent.name" in r["config"] for r in runs) else [])
    stages = sorted(
        (k for k in summary if k.startswith("stage_mean_reward/")),
        key=lambda k: -float(k.rsplit("/", 1)[1]),
    )
    panels = [
        {
            "type": "line",
            "title": "Reward per episode",
            "x": "_step",
            "y": ["reward"],
            "groupby": groupby,
        },
        {
            "type": "line",
            "title": "Best reward so far",
            "x": "_step",
            "y": ["best_reward"],
            "groupby": groupby,
        },
        {
            "type": "bar",
            "title": "Mean reward per epsilon stage (1.0 first)",
            "metrics": stages,
            "groupby": groupby,
        },
        {"type": "media", "title": "Best block", "media_keys": ["best_block"]},
        {
            "type": "parallel",
            "title": "Swept settings against the best reward",
            "config": by,
            "summary": ["best_reward"],
        },
        {"type": "table", "title": "Runs", "summary": list(TABLE)},
    ]
    dropped = []
    for p in panels:
        for field, known in (
            ("y", history),
            ("metrics", summary),
            ("media_keys", history),
            ("summary", summary),
        ):
            if field in p:
                keep = [k for k in p[field] if k in known]
                dropped += [f"{p['title']}: {k}" for k in p[field] if k not in known]
                p[field] = keep
    configs = set().union(*(r["config"] for r in runs))
    for p in panels:
        if "groupby" in p:
            p["groupby"] = [k for k in p["groupby"] if k in configs]
    panels = [p for p in panels if any(p.get(f) for f in ("y", "metrics", "media_keys", "summary"))]
    return {
        "entity": entity,
        "project": project,
        "group": group,
        "title": title,
        "runs": [r["id"] for r in runs],
        "swept": by,
        "panels": panels,
        "dropped": dropped,
    }


def build(spec: dict):
    """The wandb-workspaces Report of a :func:`definition`."""
    # lazy: only the W&B report builder needs it
    import wandb_workspaces.reports.v2 as wr

    def group_of(p: dict):
        return [wr.Config(k) for k in p.get("groupby", [])] or None

    panels = []
    for p in spec["panels"]:
        if p["type"] == "line":
            g = group_of(p)
            panels.append(
                wr.LinePlot(
                    title=p["title"],
                    x=p["x"],
                    y=p["y"],
                    groupby=g[0] if g else None,
                    groupby_aggfunc="mean" if g else None,
                    groupby_rangefunc="stderr" if g else None,
                )
            )
        elif p["type"] == "bar":
            g = group_of(p)
            panels.append(
                wr.BarPlot(
                    title=p["title"],
                    metrics=[wr.SummaryMetric(k) for k in p["metrics"]],
                    groupby=g[0] if g else None,
                    groupby_aggfunc="mean" if g else None,
                )
            )
        elif p["type"] == "media":
            panels.append(wr.MediaBrowser(title=p["title"], media_keys=p["media_keys"]))
        elif p["type"] == "parallel":
            cols = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(k)) for k in p["config"]]
            cols += [
                wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(k)) for k in p["summary"]
            ]
            panels.append(wr.ParallelCoordinatesPlot(title=p["title"], columns=cols))
        elif p["type"] == "table":
            panels.append(wr.RunComparer(diff_only="split"))
    filters = f"Group == '{spec['group']}'" if spec.get("group") else ""
    runset = wr.Runset(
        entity=spec["entity"],
        project=spec["project"],
        filters=filters,
        groupby=[f"config.{k}" for k in spec["swept"]],
    )
    return wr.Report(
        project=spec["project"],
        entity=spec["entity"],
        title=spec["title"],
        description="BlockQNN search report (python -m blockqnn.wandb_report)",
        blocks=[
            wr.H1(spec["title"]),
            wr.P(
                "Rewards per episode, the best so far, the mean reward of each epsilon stage, "
                "the best blocks and the swept settings of these runs."
            ),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ],
    )


def logged_in() -> bool:
    return bool(os.environ.get("WANDB_API_KEY")) or _wandb_login()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m blockqnn.wandb_report", description=__doc__.splitlines()[0]
    )
    ap.add_argument("target", help="<entity>/<project>")
    ap.add_argument("--group", default=None, help="a sweep's W&B group (the sweep folder's name)")
    ap.add_argument("--title", default=None)
    ap.add_argument(
        "--runs", nargs="*", type=Path, default=None, help="local run folders instead of W&B's API"
    )
    ap.add_argument(
        "--out",
        type=Path,
        default=Path("wandb_report.json"),
        help="where the definition is written",
    )
    args = ap.parse_args(argv)
    try:
        if args.target.count("/") != 1:
            raise ConfigError(f"{args.target!r}: expected <entity>/<project>")
        entity, project = args.target.split("/")
        online = logged_in()
        if args.runs:
            runs = runs_from_folders(args.runs)
        elif online:
            runs = runs_from_wandb(entity, project, args.group)
        else:
            raise ConfigError(
                "no W&B credentials here (WANDB_API_KEY or `wandb login`): give the local run "
                "folders with --runs to write the report's definition"
            )
        group = args.group or (runs[0]["group"] if len({r["group"] for r in runs}) == 1 else None)
        spec = definition(
            runs, entity, project, group, args.title or f"BlockQNN: {group or project}"
        )
        build(spec)  # checks the panels against wandb-workspaces' own models
        args.out.write_text(json.dumps(spec, indent=2) + "\n")
        for d in spec["dropped"]:
            print(f"note: left out (no run logged it): {d}", file=sys.stderr)
        if online:
            report = build(spec)
            report.save()
            print(f"report saved: {report.url}")
        else:
            print(
                f"no W&B credentials here: the report was not saved; its definition is in {args.out} "
                f"({len(spec['panels'])} panels over {len(runs)} runs). Run again where W&B is set up "
                "(after `wandb sync` of the run folders) to save it.",
                file=sys.stderr,
            )
        return 0
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())

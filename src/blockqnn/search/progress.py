"""Terminal progress of a search (rich) and the closing summary table."""

from __future__ import annotations

import time

from omegaconf import OmegaConf
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from blockqnn.result import widths_text
from blockqnn.search.ranking import ranked
from blockqnn.space.registry import build_space, parse_any


class SearchProgress:
    def __init__(self, console, total: int, done: int, best: float | None):
        self.progress = Progress(
            TextColumn("[bold]search[/] it {task.fields[iteration]} eps {task.fields[epsilon]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self.task = self.progress.add_task(
            "search",
            total=total,
            completed=done,
            iteration=0,
            epsilon="-",
            best=self._fmt(best),
            note="",
            counts="",
        )

    @staticmethod
    def _fmt(best):
        return "-" if best is None else f"{best:.4f}"

    # rich's Progress takes a lock shared with its refresh thread; hundreds of updates a second
    # (instant evaluators) would make the search wait on it, so updates are passed on at most
    # every EVERY_S seconds (and at the end).
    EVERY_S = 0.1

    def __enter__(self):
        self.progress.__enter__()
        self._last = 0.0
        self._advance = 0
        self._fields: dict = {}
        return self

    def __exit__(self, *exc):
        self._flush()
        return self.progress.__exit__(*exc)

    def _flush(self) -> None:
        if self._advance or self._fields:
            self.progress.update(self.task, advance=self._advance, **self._fields)
            self._advance, self._fields = 0, {}
        self._last = time.monotonic()

    def _push(self, advance: int, **fields) -> None:
        self._advance += advance
        self._fields.update(fields)
        if time.monotonic() - self._last >= self.EVERY_S:
            self._flush()

    def update(self, episode, iteration, epsilon, best, note=""):
        self._push(
            0, iteration=iteration, epsilon=f"{epsilon:.2f}", best=self._fmt(best), note=note
        )

    def advance(self, episode, iteration, epsilon, best, counts: dict | None = None):
        text = (
            ""
            if not counts
            else (
                f"T{counts['trained']} R{counts['reused_total']}"
                + (f" P{counts['predicted_total']}" if counts["predicted_total"] else "")
                + (f" I{counts['invalid_total']}" if counts.get("invalid_total") else "")
            )
        )
        self._push(
            1,
            iteration=iteration,
            epsilon=f"{epsilon:.2f}",
            best=self._fmt(best),
            note="",
            counts=text,
        )


def summary_table(episodes: list[dict], k: int = 10, reevaluations: list[dict] = ()) -> Table:
    """The best distinct blocks, one compact line each (``1:conv3 2:max3(1) 3:add(1,2)``;
    the full NSC is in topk.json): narrow enough for an 80-column terminal."""

    table = Table(title="top blocks (full NSC: topk.json)", padding=(0, 1), pad_edge=False)
    top = ranked(episodes, reevaluations)[:k]
    sized = any(e.get("widths") for e in top)  # a budget chose each network's stage widths
    columns = [
        ("#", "right"),
        ("ep", "right"),
        ("reward", "right"),
        ("n", "right"),
        ("acc", "right"),
        ("MFLOPs", "right"),
        *([("widths", "right")] if sized else []),
        ("block", "left"),
    ]
    for col, just in columns:
        table.add_column(
            col,
            justify=just,
            overflow="fold" if col == "block" else "ellipsis",
            no_wrap=col != "block",
        )
    for i, e in enumerate(top, 1):
        se = f"±{e['reward_se']:.3f}" if e["evaluations"] > 1 else ""
        table.add_row(
            str(i),
            str(e["id"]),
            f"{e['reward']:.4f}{se}",
            str(e["evaluations"]),
            "-" if e["accuracy"] is None else f"{e['accuracy']:.3f}",
            "-" if e["flops"] is None else f"{e['flops'] / 1e6:.1f}",
            *([widths_text(e.get("widths")) or "-"] if sized else []),
            parse_any(e["nsc"]).compact(),
        )
    return table


def duration(seconds: float) -> str:
    """``3 h 20 min``, ``4 min 10 s``, ``12 s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"


def expected_time(episodes: list[dict], todo: int, slots: int) -> str | None:
    """The wall time ``todo`` more episodes take at the rate this search measured so far
    (seconds per finished episode, trained and reused alike, over the episodes' own span), or
    None before two episodes finished."""
    done = [e for e in episodes if e.get("finished_at") is not None and e["status"] != "running"]
    if len(done) < 2:
        return None
    wall = [
        float(e["wall_time"] or 0.0) for e in done if not e.get("reused") and not e.get("predicted")
    ]
    per = (
        sum(wall) / max(1, len(done)) / max(1, slots)
    )  # evaluation seconds per episode, slots in parallel
    return f"about {duration(per * todo)} at the measured {per:.3g} s per block"


def startup_panel(
    cfg,
    run_dir,
    total: int,
    planned: int,
    schedule,
    slots: int,
    evaluator=None,
    episodes: list[dict] | None = None,
):
    """What the search will do, before it starts: data, network, agent and its constants, the
    schedule (iterations x batch = planned blocks, and the cap), evaluator, executor, reward,
    run folder and the command that resumes it."""

    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    data = cfg.data
    sizes = ""
    dm = getattr(evaluator, "datamodule", None)
    if dm is not None and getattr(dm, "_train", None) is not None and hasattr(dm._train, "__len__"):
        sizes = f" ({len(dm._train):,} train / {len(dm._val):,} validation)"
    grid.add_row("data", f"{data.name}{sizes}")
    net = cfg.network
    space = build_space(cfg.get("space"))
    size = (
        f"about {net.params:,} parameters each (stage widths chosen per block)"
        if net.get("params") is not None
        else f"about {net.flops:,} FLOPs each (stage widths chosen per block)"
        if net.get("flops") is not None
        else f"F={net.width}"
    )
    grid.add_row(
        "network",
        f"{net.kind}, {size}, N={net.blocks_per_stage}, {net.stages} stages; " + space.describe()
        if space.has_network
        else space.describe(),
    )
    params = {
        k: v
        for k, v in OmegaConf.to_container(cfg.agent.params, resolve=True).items()
        if k != "_target_"
    }
    grid.add_row("agent", f"{cfg.agent.name} ({', '.join(f'{k} {v}' for k, v in params.items())})")
    line = f"{schedule.name}: {schedule.iterations} iterations x {schedule.batch_size} = {planned:,} blocks"
    if total < planned:
        line += f"; this run stops at {total:,} (search.max_episodes)"
    if cfg.search.get("max_trainings") is not None:
        line += f"; or after {int(cfg.search.max_trainings):,} trainings (search.max_trainings)"
    grid.add_row("schedule", line)
    done = sum(e["status"] != "running" for e in episodes or [])
    expected = expected_time(episodes or [], max(0, total - done), slots)
    grid.add_row(
        "expected", expected or "measured after the first blocks (the progress line's time left)"
    )
    ev = cfg.evaluator
    grid.add_row(
        "evaluator",
        f"{str(ev._target_).rsplit('.', 1)[-1]}"
        + (
            f" (recipe: {cfg.recipe.epochs} epochs, batch {cfg.recipe.batch_size})"
            if getattr(evaluator, "trains", True)
            else ""
        ),
    )
    grid.add_row(
        "executor",
        f"{str(cfg.executor._target_).rsplit('.', 1)[-1]}, {slots} at a time, "
        f"{'asynchronous' if cfg.search.asynchronous else 'synchronous iterations'}",
    )
    r = cfg.reward
    grid.add_row(
        "reward",
        f"acc - {r.scale} ({r.mu} log FLOPs/FLOPs({r.flops_reference}) + {r.rho} log density)",
    )
    grid.add_row("run folder", str(run_dir))
    grid.add_row("resume", f"python search.py hydra.run.dir={run_dir}")
    return Panel(grid, title="blockqnn search", expand=False)

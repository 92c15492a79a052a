"""Terminal progress of a search (rich) and the closing summary table."""

from __future__ import annotations

import json

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from blockqnn.search.outputs import ranked


class SearchProgress:
    def __init__(self, console, total: int, done: int, best: float | None):
        self.progress = Progress(
            TextColumn("[bold]search[/] it {task.fields[iteration]} eps {task.fields[epsilon]}"),
            BarColumn(), MofNCompleteColumn(),
            TextColumn("best {task.fields[best]}"), TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("search", total=total, completed=done, iteration=0,
                                           epsilon="-", best=self._fmt(best), note="")

    @staticmethod
    def _fmt(best):
        return "-" if best is None else f"{best:.4f}"

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def update(self, episode, iteration, epsilon, best, note=""):
        self.progress.update(self.task, iteration=iteration, epsilon=f"{epsilon:.2f}", best=self._fmt(best), note=note)

    def advance(self, episode, iteration, epsilon, best):
        self.progress.update(self.task, advance=1, iteration=iteration, epsilon=f"{epsilon:.2f}",
                             best=self._fmt(best), note="")


def summary_table(episodes: list[dict], k: int = 10) -> Table:
    table = Table(title="top blocks")
    for col in ("rank", "episode", "reward", "accuracy", "MFLOPs", "params", "density", "block (NSC)"):
        table.add_column(col, overflow="fold")
    for i, e in enumerate(ranked(episodes)[:k], 1):
        table.add_row(str(i), str(e["id"]), f"{e['reward']:.4f}",
                      "-" if e["accuracy"] is None else f"{e['accuracy']:.4f}",
                      "-" if e["flops"] is None else f"{e['flops'] / 1e6:.2f}",
                      str(e["params"]), "-" if e["density"] is None else f"{e['density']:.2f}",
                      json.dumps(json.loads(e["nsc"])[:-1], separators=(",", ":")))
    return table

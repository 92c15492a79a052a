"""Episode loggers: W&B (offline unless the user configured W&B), CSV, none."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import netrc
import os
import queue
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from blockqnn.result import COUNTS as RESULT_COUNTS
from blockqnn.result import count_name, is_measured, widths_text
from blockqnn.space.registry import draw_arch, parse_any
from blockqnn.wandb_files import history_rows

FIELDS = [
    "episode",
    "iteration",
    "epsilon",
    "status",
    "reward",
    "accuracy",
    "flops",
    "params",
    "widths",
    "density",
    "best_reward",
    "reused",
    "predicted",
    "key",
    "nsc",
]
# Logged per episode to W&B besides FIELDS: running counts and the search's elapsed time.
COUNTS = [*RESULT_COUNTS, "elapsed_s", "wall_time"]


class NoLogger:
    def __init__(self, run_dir: Path | None = None, run_config: dict | None = None):
        pass

    def log_episode(self, row: dict[str, Any]) -> None: ...

    def log_best(self, episode: int, best: dict[str, Any]) -> None:
        """The best block changed at ``episode`` (``best``: reward, accuracy, nsc, key)."""

    def finish(self, episodes: list[dict], best: dict | None, run_dir: Path) -> None: ...

    def catch_up(self, episodes: list[dict]) -> None:
        """At start: log the finished episodes of ``episodes`` (the store's) that this logger
        may not hold, so that after any kill and resume every episode is logged once."""

    def log_reevaluation(self, row: dict[str, Any]) -> None:
        """A leading block was evaluated again (``key``, ``repeat``, its result)."""

    def close(self) -> None:
        """Flush and close without the final outputs (the search stopped early). Safe after
        ``finish`` and twice."""


class CSVLogger(NoLogger):
    def __init__(self, run_dir: Path, run_config: dict | None = None):
        self.path = Path(run_dir) / "episodes.csv"
        new = not self.path.exists()
        self.logged: set[int] = set()
        if not new:
            with open(self.path, newline="") as f:
                self.logged = {
                    int(r["episode"])
                    for r in csv.DictReader(f)
                    if (r.get("episode") or "").isdigit()
                }
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def catch_up(self, episodes: list[dict]) -> None:
        for row in catch_up_rows(episodes, self.logged):
            self.log_episode(row)

    def log_episode(self, row: dict[str, Any]) -> None:
        self.writer.writerow({**row, "widths": widths_text(row.get("widths"))})
        self.file.flush()
        self.logged.add(int(row["episode"]))

    def finish(self, episodes, best, run_dir) -> None:
        self.file.close()

    def close(self) -> None:
        self.file.close()


def catch_up_rows(episodes: list[dict], logged: set[int]) -> list[dict]:
    """The logger rows of the finished episodes not in ``logged``, in episode order, with the
    running figures (best measured reward, counts) recomputed from the store's episodes."""

    rows, best = [], None
    counts = dict.fromkeys(RESULT_COUNTS, 0)
    for e in episodes:
        if e["status"] == "running":
            continue
        if not e.get("retrained"):  # a fresh draw is a re-evaluation, as the live loop counts it
            counts[count_name(e["status"], e["reused"], e["predicted"])] += 1
        if is_measured(e) and (best is None or e["reward"] > best):
            best = e["reward"]
        if e["id"] not in logged:
            rows.append(
                {
                    "episode": e["id"],
                    **{
                        k: e[k]
                        for k in (
                            "iteration",
                            "epsilon",
                            "status",
                            "reward",
                            "accuracy",
                            "flops",
                            "params",
                            "density",
                            "key",
                            "nsc",
                            "wall_time",
                        )
                    },
                    "widths": e.get("widths"),  # a budget's choice (absent before budgets)
                    "best_reward": best,
                    "reused": int(e["reused"]),
                    "predicted": int(e["predicted"]),
                    **counts,
                }
            )
    return rows


def run_summary(episodes: list[dict]) -> dict[str, Any]:
    """A finished search's figures for W&B's summary: the mean reward of each epsilon stage
    (``stage_mean_reward/<epsilon>``, the paper's figure) and the counts of trained, invalid,
    reused and predicted episodes (``result.COUNTS``)."""
    stages: dict[float, list[float]] = {}
    for e in episodes:
        if e["status"] not in ("running", "failed") and e["reward"] is not None:
            stages.setdefault(float(e["epsilon"]), []).append(float(e["reward"]))
    out: dict[str, Any] = {
        f"stage_mean_reward/{eps:g}": sum(v) / len(v) for eps, v in sorted(stages.items())
    }
    out.update(dict.fromkeys(RESULT_COUNTS, 0))
    for e in episodes:
        if e["status"] != "running" and not e.get("retrained"):
            out[count_name(e["status"], e["reused"], e["predicted"])] += 1
    return out


def wandb_steps(run_dir: Path, run: str) -> set[int]:
    """The episodes of the W&B run ``run`` that its offline files in ``run_dir/wandb`` hold
    (every ``run-<id>.wandb`` of every earlier start of the run; rows of earlier versions, whose
    W&B step was the episode, count by their step)."""

    steps: set[int] = set()
    for path in sorted((Path(run_dir) / "wandb").glob(f"*-{run}*/run-{run}.wandb")):
        if path.parent.name == "latest-run":
            continue
        steps |= {
            int(r.get("episode", r.get("_step")))
            for r in history_rows(path)
            if "reward" in r and ("episode" in r or "_step" in r)
        }
    return steps


def run_id(run_dir: Path, prefix: str = "bq") -> str:
    """A W&B run id derived from the run folder, so a resumed run continues its W&B run."""
    return f"{prefix}-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def sweep_group() -> str | None:
    """The name of the Hydra multirun's sweep folder this job runs in (None outside one)."""
    try:
        # lazy: Hydra's runtime only when it runs
        from hydra.core.hydra_config import HydraConfig

        # lazy: Hydra's runtime only when it runs
        from hydra.types import RunMode

        hc = HydraConfig.get()
    except Exception:  # noqa: BLE001 - not under Hydra (a test, a notebook)
        return None
    if hc.mode != RunMode.MULTIRUN:
        return None
    return Path(hc.sweep.dir).name


def wandb_mode(mode: str | None = None) -> str:
    """Offline unless asked, or unless the user set W&B up (an API key, a login, WANDB_MODE)."""
    if mode:
        return mode
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    return "online" if os.environ.get("WANDB_API_KEY") or _wandb_login() else "offline"


def _wandb_login() -> bool:
    """Whether `wandb login` stored a key: an api.wandb.ai entry (or WANDB_BASE_URL's host) in ~/.netrc."""

    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(NoLogger):
    """Episodes to a W&B run, without blocking the search: ``wandb.init`` and every ``log``
    run in a background thread fed by a queue (W&B's start-up takes seconds and each log call
    about a millisecond; the master's loop must not wait for either). ``finish`` drains the
    queue and closes the run; an error of W&B's is raised there, or by the next
    ``log_episode`` once it happened.

    As W&B's users compare runs: the runs of one Hydra multirun share a ``group`` (the sweep
    folder's name unless ``logger.group`` is set), ``job_type`` is the agent, the tags name
    the data, the agent and the schedule, the whole resolved config is the run's config; each
    episode logs its result with the running counts of trained, reused and predicted blocks
    and the elapsed time; the best block's drawing is logged whenever the best changes, and
    the summary holds the best reward, accuracy and block."""

    def __init__(
        self,
        run_dir: Path,
        run_config: dict | None = None,
        project: str = "blockqnn",
        mode: str | None = None,
        entity: str | None = None,
        name: str | None = None,
        group: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        finish_timeout_s: float = 120.0,
    ):
        self.finish_timeout_s = float(finish_timeout_s)

        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir = Path(run_dir)
        self.id = run_id(run_dir)
        cfg = run_config or {}
        agent = (cfg.get("agent") or {}).get("name")
        schedule = (cfg.get("agent") or {}).get("epsilon_schedule")
        schedule = (
            schedule if isinstance(schedule, str) else ("custom" if schedule is not None else None)
        )
        data = (cfg.get("data") or {}).get("name")
        default_tags = [
            f"{k}:{v}" for k, v in (("data", data), ("agent", agent), ("schedule", schedule)) if v
        ]
        self.run_dir = run_dir
        self._init = dict(
            project=project,
            entity=entity,
            name=name or run_dir.name,
            id=self.id,
            resume="allow",
            dir=str(run_dir),
            mode=wandb_mode(mode),
            config=run_config,
            group=group or sweep_group(),
            job_type=job_type or agent,
            tags=list(tags) if tags is not None else default_tags,
        )
        self.run = None
        self._images: dict[int, Any] = {}  # episode -> the new best's drawing for its row
        self._closed = False
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="wandb-logger", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            # lazy: wandb takes a second to import; only logger=wandb needs it
            import wandb

            self.wandb = wandb
            self.run = wandb.init(**self._init, settings=wandb.Settings(console="off", quiet=True))
            # Every row says its episode and the charts use it as their x axis; W&B's own step
            # just counts rows, so an episode that arrives after a later one (an asynchronous
            # search) is logged too (W&B drops a row whose step is lower than one it has).
            self.run.define_metric("episode")
            self.run.define_metric("*", step_metric="episode")
            while True:
                item = self._queue.get()
                if item is None:
                    return
                kind, payload = item
                if kind == "row":
                    self._log_row(payload)
                else:
                    payload()
        except BaseException as exc:  # noqa: BLE001 - handed to the search's thread
            self._error = exc

    def _check(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"W&B logging failed: {self._error}") from self._error

    def log_episode(self, row: dict[str, Any]) -> None:
        self._check()
        self._queue.put(("row", row))

    def log_best(self, episode: int, best: dict[str, Any]) -> None:
        self._check()
        self._queue.put(("call", lambda: self._best(episode, best)))

    def _best(self, episode: int, best: dict[str, Any]) -> None:
        """Draw the new best block for its episode's row (the search logs the best before its
        episode) and update the summary."""
        folder = self.run_dir / "wandb" / "best"
        folder.mkdir(parents=True, exist_ok=True)
        png = draw_arch(
            parse_any(best["nsc"]),
            folder / f"best_{episode}.png",
            title=f"episode {episode}: reward {best['reward']:.4f}",
        )[0]
        nsc = json.dumps(best["nsc"], separators=(",", ":"))
        self._images[episode] = self.wandb.Image(str(png), caption=nsc)
        self.run.summary.update(
            {
                "best_reward": best["reward"],
                "best_accuracy": best.get("accuracy"),
                "best_nsc": nsc,
                "best_key": best.get("key"),
                "best_episode": episode,
            }
        )

    def catch_up(self, episodes: list[dict]) -> None:
        """Episodes the store holds that no earlier start of this W&B run durably wrote (a kill
        between the store's commit and W&B's write): offline, the run's files on disk say which
        steps they hold; online, W&B's resumed step says where its history ends."""
        if not any(e["status"] != "running" for e in episodes):
            return

        def work() -> None:
            if self._init["mode"] != "online":
                logged = wandb_steps(self.run_dir, self.id)
            else:  # one row per episode, logged in the order the store finished them
                done = sorted(
                    (e for e in episodes if e["status"] != "running"),
                    key=lambda e: (e.get("finished_at") or 0.0, e["id"]),
                )
                logged = {e["id"] for e in done[: int(self.run.starting_step or 0)]}
            for row in catch_up_rows(episodes, logged):
                self._log_row(row)

        self._queue.put(("call", work))

    def log_reevaluation(self, row: dict[str, Any]) -> None:
        self._check()

        def work() -> None:
            table = self.run.summary.get("reevaluations") or 0
            self.run.summary.update({"reevaluations": int(table) + 1})

        self._queue.put(("call", work))

    def _log_row(self, payload: dict) -> None:
        payload = {**payload, "widths": widths_text(payload.get("widths"))}
        row = {
            k: payload[k]
            for k in FIELDS + COUNTS
            if k not in ("nsc", "key") and payload.get(k) is not None
        }
        image = self._images.pop(int(payload["episode"]), None)
        if image is not None:
            row["best_block"] = image
        self.run.log(row)

    def finish(self, episodes, best, run_dir) -> None:
        self._closed = True
        self._queue.put(("call", lambda: self._summary(episodes, best, run_dir)))
        self._queue.put(None)
        self._join("finish")
        self._check()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(("call", lambda: self.run.finish()))
        self._queue.put(None)
        self._join("close")

    def _join(self, what: str) -> None:
        """Wait for the W&B thread at most ``finish_timeout_s`` (an upload can hang for ever):
        past it the search goes on to exit, saying so; the run's files stay in wandb/."""
        self._thread.join(timeout=self.finish_timeout_s)
        if self._thread.is_alive():
            logging.getLogger("blockqnn.search").warning(
                "W&B did not %s within %g s (logger.finish_timeout_s); the search goes on without "
                "it. Its files are in %s (offline runs: `wandb sync` uploads them)",
                what,
                self.finish_timeout_s,
                self.run_dir / "wandb",
            )

    def _summary(self, episodes, best, run_dir) -> None:
        table = self.wandb.Table(columns=FIELDS[:-1] + ["nsc"])
        for e in episodes:
            if e["status"] != "running":
                table.add_data(
                    e["id"],
                    e["iteration"],
                    e["epsilon"],
                    e["status"],
                    e["reward"],
                    e["accuracy"],
                    e["flops"],
                    e["params"],
                    widths_text(e.get("widths")),
                    e["density"],
                    None,
                    e["reused"],
                    e["predicted"],
                    e["key"],
                    e["nsc"],
                )
        images = {
            key: self.wandb.Image(str(run_dir / f"{key}.png"))
            for key in ("best_block", "best_network")
            if (run_dir / f"{key}.png").exists()
        }
        self.run.log({"blocks": table, **images})
        self.run.summary.update(run_summary(episodes))
        if best is not None:
            self.run.summary.update(
                {
                    "best_params": best.get("params"),
                    "best_flops": best.get("flops"),
                    "best_widths": widths_text(best.get("widths")),
                }
            )
            self.run.summary.update(
                {
                    "best_reward": best["reward"],
                    "best_accuracy": best.get("accuracy"),
                    "best_nsc": json.dumps(best["nsc"], separators=(",", ":")),
                    "best_key": best.get("key"),
                    "best_reward_se": best.get("reward_se"),
                    "best_evaluations": best.get("evaluations"),
                    "best_reward_first": best.get("reward_first"),
                }
            )
        self.run.finish()

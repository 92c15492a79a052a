"""Episode loggers: W&B (offline unless the user configured W&B), CSV, none."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path
from typing import Any


FIELDS = ["episode", "iteration", "epsilon", "status", "reward", "accuracy", "flops", "params", "density",
          "best_reward", "reused", "predicted", "key", "nsc"]
# Logged per episode to W&B besides FIELDS: running counts and the search's elapsed time.
COUNTS = ["trained", "reused_total", "predicted_total", "elapsed_s", "wall_time"]


class NoLogger:
    def __init__(self, run_dir: Path | None = None, run_config: dict | None = None):
        pass

    def log_episode(self, row: dict[str, Any]) -> None: ...

    def log_best(self, episode: int, best: dict[str, Any]) -> None:
        """The best block changed at ``episode`` (``best``: reward, accuracy, nsc, key)."""

    def finish(self, episodes: list[dict], best: dict | None, run_dir: Path) -> None: ...

    def close(self) -> None:
        """Flush and close without the final outputs (the search stopped early)."""


class CSVLogger(NoLogger):
    def __init__(self, run_dir: Path, run_config: dict | None = None):
        self.path = Path(run_dir) / "episodes.csv"
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=FIELDS, extrasaction="ignore")
        if new:
            self.writer.writeheader()

    def log_episode(self, row: dict[str, Any]) -> None:
        self.writer.writerow(row)
        self.file.flush()

    def finish(self, episodes, best, run_dir) -> None:
        self.file.close()

    def close(self) -> None:
        self.file.close()


def run_id(run_dir: Path, prefix: str = "bq") -> str:
    """A W&B run id derived from the run folder, so a resumed run continues its W&B run."""
    return f"{prefix}-" + hashlib.sha1(str(Path(run_dir).resolve()).encode()).hexdigest()[:12]


def sweep_group() -> str | None:
    """The name of the Hydra multirun's sweep folder this job runs in (None outside one)."""
    try:
        from hydra.core.hydra_config import HydraConfig
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
    import netrc
    from urllib.parse import urlparse

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

    def __init__(self, run_dir: Path, run_config: dict | None = None, project: str = "blockqnn", mode: str | None = None,
                 entity: str | None = None, name: str | None = None, group: str | None = None,
                 job_type: str | None = None, tags: list[str] | None = None):
        import queue
        import threading

        os.environ.setdefault("WANDB_SILENT", "true")
        run_dir = Path(run_dir)
        self.id = run_id(run_dir)
        cfg = run_config or {}
        agent = (cfg.get("agent") or {}).get("name")
        schedule = (cfg.get("agent") or {}).get("epsilon_schedule")
        schedule = schedule if isinstance(schedule, str) else ("custom" if schedule is not None else None)
        data = (cfg.get("data") or {}).get("name")
        default_tags = [f"{k}:{v}" for k, v in (("data", data), ("agent", agent), ("schedule", schedule)) if v]
        self.run_dir = run_dir
        self._init = dict(project=project, entity=entity, name=name or run_dir.name, id=self.id, resume="allow",
                          dir=str(run_dir), mode=wandb_mode(mode), config=run_config,
                          group=group or sweep_group(), job_type=job_type or agent,
                          tags=list(tags) if tags is not None else default_tags)
        self.run = None
        self._error: BaseException | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._work, name="wandb-logger", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            import wandb

            self.wandb = wandb
            self.run = wandb.init(**self._init, settings=wandb.Settings(console="off", quiet=True))
            while True:
                item = self._queue.get()
                if item is None:
                    return
                kind, payload = item
                if kind == "row":
                    self.run.log({k: payload[k] for k in FIELDS + COUNTS
                                  if k not in ("nsc", "key") and payload.get(k) is not None},
                                 step=int(payload["episode"]))
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
        """Draw the new best block and log it (at its episode's step, which W&B has not
        closed yet: rows of the queue come in order) with the summary."""
        from blockqnn.space.draw import draw_block
        from blockqnn.space.nsc import Block

        folder = self.run_dir / "wandb" / "best"
        folder.mkdir(parents=True, exist_ok=True)
        png = draw_block(Block.parse(best["nsc"]), folder / f"best_{episode}.png",
                         title=f"episode {episode}: reward {best['reward']:.4f}")[0]
        nsc = json.dumps(best["nsc"], separators=(",", ":"))
        self.run.log({"best_block": self.wandb.Image(str(png), caption=nsc)}, step=episode)
        self.run.summary.update({"best_reward": best["reward"], "best_accuracy": best.get("accuracy"),
                                 "best_nsc": nsc, "best_key": best.get("key"), "best_episode": episode})

    def finish(self, episodes, best, run_dir) -> None:
        self._queue.put(("call", lambda: self._summary(episodes, best, run_dir)))
        self._queue.put(None)
        self._thread.join()
        self._check()

    def close(self) -> None:
        self._queue.put(("call", lambda: self.run.finish()))
        self._queue.put(None)
        self._thread.join(timeout=60)

    def _summary(self, episodes, best, run_dir) -> None:
        table = self.wandb.Table(columns=FIELDS[:-1] + ["nsc"])
        for e in episodes:
            if e["status"] != "running":
                table.add_data(e["id"], e["iteration"], e["epsilon"], e["status"], e["reward"], e["accuracy"],
                               e["flops"], e["params"], e["density"], None, e["reused"], e["predicted"], e["key"],
                               e["nsc"])
        self.run.log({"blocks": table})
        if best is not None:
            self.run.summary.update({"best_reward": best["reward"], "best_accuracy": best.get("accuracy"),
                                     "best_nsc": json.dumps(best["nsc"], separators=(",", ":")),
                                     "best_key": best.get("key")})
        self.run.finish()

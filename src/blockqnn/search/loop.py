"""The search loop: sample blocks along the epsilon schedule, evaluate them (reusing the
stored result of any block already evaluated), teach the agent, record everything."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from blockqnn.agent import Agent, parse_schedule
from blockqnn.config import SearchConfig, check
from blockqnn.errors import BlockQNNError, ConfigError
from blockqnn.evaluator import evaluator_spec, make_evaluator
from blockqnn.predictor import predicted_result
from blockqnn.result import RETRIED
from blockqnn.search.outputs import write_outputs
from blockqnn.search.store import SearchStore, parts_of
from blockqnn.space.nsc import Block

log = logging.getLogger("blockqnn.search")

#: Group commits (see blockqnn.search.store): the loop commits at the first chance once results
#: worth this many seconds of evaluation are uncommitted (any real training: at once), and at
#: least this often otherwise (instant evaluators: up to a second of results per commit).
COMMIT_WORK_S = 0.2
COMMIT_EVERY_S = 1.0


def fingerprint(cfg: DictConfig) -> dict:
    """What must not change between a search and its resumption."""
    ev = evaluator_spec(cfg)
    evaluator = {k: v for k, v in ev["evaluator"].items() if k not in ("devices", "timeout_s")}
    return {
        "seed": ev["seed"], "data": ev["data"], "recipe": ev["recipe"], "network": ev["network"],
        "model": ev["model"], "reward": ev["reward"], "max_layers": int(cfg.space.max_layers),
        "evaluator": evaluator,
        "agent": OmegaConf.to_container(cfg.agent, resolve=True),
        "predictor": OmegaConf.to_container(cfg.search.predictor, resolve=True)
        if cfg.search.get("predictor") is not None else None,
    }


def _instantiate(node: DictConfig, what: str, **kwargs):
    """hydra.utils.instantiate with its failures turned into one ConfigError."""
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as exc:
        cause = exc.__cause__ or exc
        raise ConfigError(f"cannot build the {what} from {node.get('_target_')!r}: {cause}") from None


def build_agent(cfg: DictConfig):
    agent = _instantiate(cfg.agent.params, "agent", max_layers=int(cfg.space.max_layers), seed=int(cfg.seed))
    if not isinstance(agent, Agent):
        raise ConfigError(f"agent.params._target_={cfg.agent.params._target_!r} is not an agent "
                          "(a blockqnn.agent.Agent); agents: qlearning, random, evolution, tpe, replay")
    return agent


def build_predictor(cfg: DictConfig):
    node = cfg.search.get("predictor")
    if node is None:
        return None
    return _instantiate(node, "predictor", seed=int(cfg.seed))


def build_executor(cfg: DictConfig, evaluator=None):
    """The configured executor, given the evaluator spec (or, for the local executor, an
    evaluator object already built, e.g. the one :func:`validate` loaded the data with)."""
    local = str(cfg.executor.get("_target_", "")).endswith("LocalExecutor")
    # Other executors build one evaluator per worker from the spec.
    use = evaluator if (evaluator is not None and local) else evaluator_spec(cfg)
    return _instantiate(cfg.executor, "executor", evaluator=use, _recursive_=False)


def build_logger(cfg: DictConfig, run_dir: Path):
    # Partial: the run's config holds other _target_ nodes that must not be instantiated.
    make = _instantiate(cfg.logger, "logger", _partial_=True)
    try:
        return make(run_dir=str(run_dir), run_config=OmegaConf.to_container(cfg, resolve=True))
    except TypeError as exc:
        raise ConfigError(f"cannot build the logger from {cfg.logger.get('_target_')!r}: {exc}") from None


def validate(cfg: DictConfig):
    """Refuse bad input before any training: types and ranges (the schema), settings the
    search cannot honour, the agent, and the data (loaded here: a missing folder fails now).
    Returns the evaluator it built, for the local executor to use."""
    from hydra.utils import get_class

    from blockqnn.config import SEARCH_TRAINER_KEYS

    check(cfg, SearchConfig)
    target = cfg.executor.get("_target_")
    try:
        get_class(target)
    except Exception:  # noqa: BLE001
        raise ConfigError(f"executor._target_={target!r} cannot be imported; executors: local, pool, ray") from None
    import inspect

    known = set(inspect.signature(get_class(target)).parameters) - {"evaluator"}
    unknown = sorted(set(cfg.executor) - known - {"_target_"})
    if unknown:
        raise ConfigError(f"executor.{unknown[0]} is not an argument of {target}; its arguments: "
                          + ", ".join(sorted(known)))
    parse_schedule(cfg.agent.epsilon_schedule)
    owned = [k for k in SEARCH_TRAINER_KEYS if k in cfg.trainer]
    if owned:
        raise ConfigError(f"trainer.{owned[0]} is set by the search for every candidate "
                          "(max_epochs: recipe.epochs; callbacks: callbacks=...); remove it")
    if cfg.trainer.get("strategy") not in (None, "auto") or int(cfg.trainer.devices) != 1 \
            or int(cfg.trainer.get("num_nodes") or 1) != 1:
        raise ConfigError("a search trains each candidate on trainer.devices=1; for DDP per candidate use "
                          "evaluator.devices=<k> (each candidate then runs as its own torchrun process group)")
    build_agent(cfg)
    evaluator = make_evaluator(evaluator_spec(cfg))
    trains = getattr(evaluator, "trains", True)  # the surrogate needs no device
    if (trains and cfg.trainer.accelerator in ("gpu", "cuda")
            and str(target).endswith(("LocalExecutor", "PoolExecutor"))):
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"trainer.accelerator={cfg.trainer.accelerator} but no GPU is visible here; "
                              "use trainer=cpu (or run where a GPU is)")
    prepare = getattr(evaluator, "prepare", None)
    if prepare is not None:
        prepare()
    return evaluator


class SearchFailed(BlockQNNError):
    """Too many evaluations failed in a row for reasons that are not the candidates' own."""


class SearchInterrupted(BaseException):
    """Ctrl-C during a search. A BaseException, not a KeyboardInterrupt: Lightning turns a
    KeyboardInterrupt inside fit() into exit(1), and the evaluator records an Exception as a
    failed candidate; this one must reach the loop untouched."""


def _raise_interrupt(signum, frame):
    raise SearchInterrupted()


class Search:
    def __init__(self, cfg: DictConfig, run_dir: Path, evaluator: Callable[[Any], dict] | None = None,
                 console=None):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.evaluator = evaluator  # an evaluator object for the local executor (validate's, or a test's)
        self.schedule = parse_schedule(cfg.agent.epsilon_schedule)
        self.batch = int(cfg.agent.batch_size)
        self.asynchronous = bool(cfg.search.asynchronous)
        self.max_failures = int(cfg.search.max_consecutive_failures)
        self.max_attempts = int(cfg.search.max_attempts)
        self.failures: list[tuple[int, str]] = []  # (episode, error) of the current run of failures
        planned = self.schedule.episodes(self.batch)
        cap = cfg.search.max_episodes
        self.total = planned if cap is None else min(planned, int(cap))
        self.console = console

    def run(self) -> dict | None:
        from rich.console import Console

        from blockqnn.search.progress import SearchProgress, startup_panel, summary_table

        console = self.console or Console(stderr=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        store = SearchStore(self.run_dir / "search.db", fingerprint(self.cfg))
        agent = build_agent(self.cfg)
        predictor = build_predictor(self.cfg)
        state = store.agent_state()
        # The measured episodes, kept in memory for the predictor (read once, then appended).
        self.measured = store.measured() if predictor is not None else []
        # Predicted episodes the agent was taught: episode -> (index in its memory, nsc).
        self.predicted_told = store.predicted_told() if predictor is not None else {}
        if state is not None:
            small, parts = state
            agent.restore(small["agent"], parts_of(parts, "agent"))
            if predictor is not None:
                predictor.load_state_dict(small["predictor"] or {}, self.measured)
        self.predictor = predictor
        executor = build_executor(self.cfg, self.evaluator)
        logger = build_logger(self.cfg, self.run_dir)
        episodes = store.episodes()
        # Best measured reward so far: predicted rewards never count (as in _finish).
        self.best = max((e["reward"] for e in episodes if e["status"] != "running" and not e["predicted"]),
                        default=None)
        done = sum(e["status"] != "running" for e in episodes)
        running = store.running()
        console.print(startup_panel(self.cfg, self.run_dir, self.total, self.schedule.episodes(self.batch),
                                    self.schedule, executor.slots, self.evaluator))
        if done or running:
            console.print(f"[bold]resuming[/] {self.run_dir}: {done} episodes done, {len(running)} to run again")
        self.store, self.agent, self.executor, self.logger = store, agent, executor, logger
        self.pending: dict[int, tuple[int, float, Block]] = {}  # sampled, not yet told, by episode
        self.queue: list[int] = []  # sampled episodes waiting for a free executor slot
        self.ready: dict[int, tuple[dict, bool, bool]] = {}  # (result, reused, predicted) not yet told
        self.in_flight_keys: dict[str, int] = {}  # canonical key -> episode being trained
        self.waiting: dict[str, list[int]] = {}  # key -> episodes waiting for that result
        self.progress = SearchProgress(console, self.total, done, self.best)
        finished = [e for e in episodes if e["status"] != "running"]
        self.counts = {"trained": sum(1 for e in finished if not e["reused"] and not e["predicted"]),
                       "reused_total": sum(1 for e in finished if e["reused"]),
                       "predicted_total": sum(1 for e in finished if e["predicted"])}
        self._started = time.monotonic()
        self._committed_at = time.monotonic()
        self._uncommitted_work = 0.0  # evaluation seconds of the results not yet committed
        import signal
        import threading

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGINT, _raise_interrupt)
        try:
            with self.progress:
                # Evaluations in flight when the search stopped run again, in order.
                for row in running:
                    self._start(row["id"], row["iteration"], row["epsilon"], Block.parse(row["nsc"]),
                                store.prediction(row["id"]))
                self.episode = store.next_episode()
                if not self.asynchronous and self.episode % self.batch:
                    self._sample_until(min(self.total, (self.episode // self.batch + 1) * self.batch))
                while self.episode < self.total or self.pending:
                    self._maybe_commit()
                    if self.asynchronous:
                        self._sample_until(min(self.total, self.episode + executor.slots - len(self.pending)))
                    elif not self.pending:  # a synchronous iteration: sample all its blocks first
                        self._sample_until(min(self.total, (self.episode // self.batch + 1) * self.batch))
                    self._submit()
                    self._tell_ready()
                    if executor.in_flight:
                        self._maybe_commit()
                        for ep, result in executor.wait():
                            self._arrived(ep, result, reused=False)
                        self._tell_ready()
                self.agent.compact()  # a finished search's state restores fast (reports, extensions)
                self._commit()
        except SearchFailed:  # raised after its episode was written: the state is consistent
            self._commit()
            executor.close()
            store.close()
            logger.close()
            raise
        except (KeyboardInterrupt, SearchInterrupted):
            executor.close()
            store.close()  # drops the uncommitted episodes: the agent may be mid-update
            logger.close()
            console.print(f"\n[yellow]interrupted[/]: finished episodes are saved in {self.run_dir / 'search.db'}.",
                          soft_wrap=True)
            console.print(f"resume with: python search.py hydra.run.dir={self.run_dir}", soft_wrap=True)
            raise KeyboardInterrupt from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        executor.close()
        episodes = store.episodes()
        store.close()
        top = write_outputs(self.run_dir, episodes, int(self.cfg.search.topk))
        logger.finish(episodes, top, self.run_dir)
        console.print(summary_table(episodes, int(self.cfg.search.topk)))
        console.print(f"outputs in [bold]{self.run_dir}[/]: search.db, best_block.json, best_block.png, "
                      "topk.json, rewards.png")
        return top

    def _sample_until(self, end: int) -> None:
        """Ask the agent for the blocks of episodes ``self.episode .. end - 1``. Each is
        recorded (status running) with the agent's state before anything else happens."""
        while self.episode < end:
            iteration = self.episode // self.batch
            epsilon = self.schedule.epsilon_at(self.episode, self.batch)
            block = self.agent.ask(epsilon)
            prediction = None
            if (self.predictor is not None and block.key not in self.in_flight_keys
                    and self.store.lookup(block.key, self.max_attempts) is None):
                train, mean, std = self.predictor.gate(block)
                if not train:
                    prediction = predicted_result(block, mean, std)
            self.store.begin(self.episode, iteration, epsilon, block.to_json(), block.key, prediction)
            self._start(self.episode, iteration, epsilon, block, prediction)
            self.episode += 1

    def _refresh_predictions(self) -> None:
        """After a refit: the new forest's estimate for every predicted episode taught so far
        replaces the old one in the agent's memory."""
        told = [(i, Block.parse(nsc)) for i, nsc in self.predicted_told.values()]
        rewards = self.predictor.predict_many([b for _, b in told])
        self.agent.relabel({i: float(r) for (i, _), r in zip(told, rewards)})

    def _maybe_commit(self) -> None:
        if self.store.uncommitted and (self._uncommitted_work >= COMMIT_WORK_S
                                       or time.monotonic() - self._committed_at >= COMMIT_EVERY_S):
            self._commit()

    def _commit(self) -> None:
        """Commit the episodes written since the last commit with the agent's state now (the
        loop calls it between episodes only)."""
        self.store.commit(self._state())
        self._committed_at = time.monotonic()
        self._uncommitted_work = 0.0

    def _state(self) -> tuple[dict, dict]:
        """The agent's and the predictor's state, saved at each commit: small states, and
        the agent's large parts as the entries changed since the previous save."""
        small, parts = self.agent.checkpoint()
        return ({"agent": small, "predictor": self.predictor.state_dict() if self.predictor is not None else None},
                {f"agent.{name}": entries for name, entries in parts.items()})

    def _start(self, episode: int, iteration: int, epsilon: float, block: Block, prediction: dict | None = None):
        self.pending[episode] = (iteration, epsilon, block)
        if prediction is not None:  # the predictor's estimate stands in for training
            self.ready[episode] = (prediction, False, True)
        elif (cached := self.store.lookup(block.key, self.max_attempts)) is not None:  # evaluated: reuse
            self._arrived(episode, cached, reused=True)
        elif block.key in self.in_flight_keys:  # being trained right now: wait for that result
            self.waiting.setdefault(block.key, []).append(episode)
        else:
            self.in_flight_keys[block.key] = episode
            self.queue.append(episode)

    def _submit(self) -> None:
        while self.queue and self.executor.in_flight < self.executor.slots:
            episode = self.queue.pop(0)
            iteration, epsilon, block = self.pending[episode]
            self.progress.update(episode, iteration, epsilon, self.best,
                                 f"{self.executor.in_flight + 1} training")
            self._maybe_commit()  # the local executor trains inside submit
            self.executor.submit(episode, block.to_list())

    def _arrived(self, episode: int, result: dict, reused: bool) -> None:
        self.ready[episode] = (result, reused, False)
        block = self.pending[episode][2]
        if not reused and self.in_flight_keys.get(block.key) == episode:
            del self.in_flight_keys[block.key]
            waiting = self.waiting.pop(block.key, [])
            if result.get("status") in RETRIED and waiting and not self._timed_out_enough(block.key):
                # no result to share: train the block again
                self.in_flight_keys[block.key] = waiting[0]
                self.queue.append(waiting[0])
                if waiting[1:]:
                    self.waiting[block.key] = waiting[1:]
            else:
                for other in waiting:
                    self.ready[other] = (result, True, False)

    def _timed_out_enough(self, key: str) -> bool:
        """Whether the block's trained timeouts, recorded or arrived and not yet recorded,
        reach search.max_attempts (its timeout is then reused, not trained again)."""
        arrived = sum(1 for ep, (res, reused, predicted) in self.ready.items()
                      if not reused and not predicted and res.get("status") == "timeout"
                      and self.pending[ep][2].key == key)
        return self.store.timeouts(key) + arrived >= self.max_attempts

    def _tell_ready(self) -> None:
        """Teach the agent the results that arrived. Asynchronous: in arrival order.
        Synchronous: in episode order, so the blocks sampled do not depend on which worker
        finished first (any executor samples what the local one does)."""
        if self.asynchronous:
            for episode in list(self.ready):
                self._finish(episode, *self.ready.pop(episode))
            return
        while self.pending and min(self.pending) in self.ready:
            episode = min(self.pending)
            self._finish(episode, *self.ready.pop(episode))

    def _finish(self, episode: int, result: dict, reused: bool, predicted: bool = False) -> None:
        iteration, epsilon, block = self.pending.pop(episode)
        reward = float(result.get("reward") or 0.0)
        failed = result.get("status") == "failed"
        told = None  # the result's index in the agent's memory
        if failed:  # not the candidate's fault: recorded, never taught, never reused
            log.error("episode %d (block %s) failed:\n%s", episode, block.to_json(), result.get("error"))
            self.failures.append((episode, str(result.get("error") or "")))
        else:
            self.failures = []
            if predicted:  # the current forest's estimate (it may have been refitted since sampling)
                reward = float(self.predictor.predict_many([block])[0])
            self.agent.tell(block, reward)
            told = self.agent.told - 1
            if predicted:
                self.predicted_told[episode] = (told, block.to_list())
        if self.predictor is not None and not reused and not predicted:  # a new measurement
            self.measured.append((episode, block.to_list(), reward))
            if self.predictor.maybe_refit(self.measured) and self.predicted_told:
                self._refresh_predictions()
        self.store.finish(episode, result, reused, predicted, told)
        if not reused and not predicted:
            self._uncommitted_work += float(result.get("wall_time") or 0.0)
        self.counts["reused_total" if reused else "predicted_total" if predicted else "trained"] += 1
        improved = not predicted and not failed and (self.best is None or reward > self.best)
        if improved:
            self.best = reward
        self.logger.log_episode({"episode": episode, "iteration": iteration, "epsilon": epsilon, **result,
                                 "best_reward": self.best, "reused": int(reused), "predicted": int(predicted),
                                 "key": block.key, "nsc": json.dumps(block.to_list()), **self.counts,
                                 "elapsed_s": round(time.monotonic() - self._started, 3)})
        if improved:
            self.logger.log_best(episode, {"reward": reward, "accuracy": result.get("accuracy"),
                                           "nsc": block.to_list(), "key": block.key})
        self.progress.advance(episode, iteration, epsilon, self.best, self.counts)
        if len(self.failures) >= self.max_failures:
            first_episode, first = self.failures[0]
            lines = [ln for ln in first.strip().splitlines() if ln.strip()]
            raise SearchFailed(
                f"{len(self.failures)} evaluations failed in a row (search.max_consecutive_failures="
                f"{self.max_failures}); this is not the candidates' fault. The first, episode {first_episode}: "
                f"{lines[-1] if lines else 'no error text'} (full tracebacks in the log). Finished episodes are "
                f"saved in {self.run_dir / 'search.db'}; after fixing the cause resume with: "
                f"python search.py hydra.run.dir={self.run_dir}")

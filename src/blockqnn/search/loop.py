"""The search loop: sample blocks along the epsilon schedule, evaluate them (reusing the
stored result of any block already evaluated), teach the agent, record everything."""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from rich.console import Console

from blockqnn.data.shapes import network_spec
from blockqnn.errors import BlockQNNError, ConfigError
from blockqnn.listing import outputs_line
from blockqnn.predictor import predicted_result
from blockqnn.result import COUNTS, RETRIED, count_name, evaluation_seed, is_measured
from blockqnn.search.lock import RunLock
from blockqnn.search.outputs import write_outputs
from blockqnn.search.progress import SearchProgress, expected_time, startup_panel, summary_table
from blockqnn.search.ranking import ranked
from blockqnn.search.setup import (
    build_agent,
    build_executor,
    build_logger,
    build_predictor,
    device_shared,
    fingerprint,
    reevaluate_settings,
    schedule_of,
    space_of,
)
from blockqnn.search.signals import SearchInterrupted, SearchTerminated, SignalGuard
from blockqnn.search.store import SearchStore, parts_of
from blockqnn.space.base import Architecture

log = logging.getLogger("blockqnn.search")
#: The main outputs, listed first on the "outputs in" line (INTERFACE.md: run outputs).
SEARCH_OUTPUTS = (
    "search.db",
    "best_block.json",
    "best_block.png",
    "best_block.svg",
    "best_network.png",
    "best_network.svg",
    "topk.json",
    "rewards.png",
    "episodes.csv",
)

#: Group commits (see blockqnn.search.store): the loop commits at the first chance once results
#: worth this many seconds of evaluation are uncommitted (any real training: at once), and at
#: least this often otherwise (instant evaluators: up to a second of results per commit).
COMMIT_WORK_S = 0.2
COMMIT_EVERY_S = 1.0


class SearchFailed(BlockQNNError):
    """Too many evaluations failed in a row for reasons that are not the candidates' own."""


class Search:
    def __init__(
        self,
        cfg: DictConfig,
        run_dir: Path,
        evaluator: Callable[[Any], dict] | None = None,
        console=None,
    ):
        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.evaluator = (
            evaluator  # an evaluator object for the local executor (validate's, or a test's)
        )
        self.schedule = schedule_of(cfg)
        self.batch = self.schedule.batch_size
        self.asynchronous = bool(cfg.search.asynchronous)
        self.max_failures = int(cfg.search.max_consecutive_failures)
        self.max_attempts = int(cfg.search.max_attempts)
        self.failures: list[tuple[int, str]] = []  # (episode, error) of the current run of failures
        planned = self.schedule.planned
        cap = cfg.search.max_episodes
        self.total = planned if cap is None else min(planned, int(cap))
        budget = cfg.search.get("max_trainings")
        self.max_trainings = None if budget is None else int(budget)
        self.console = console
        self.reevaluate = reevaluate_settings(cfg)
        self.space = space_of(cfg)  # parses stored architectures; the agent walks it

    def run(self) -> dict | None:
        """Run (or resume) the search. Whatever ends it (the schedule's end, Ctrl-C, SIGTERM,
        an exception of any kind) the executor (its workers and Ray tasks), the store, the
        logger and the folder's lock are closed in one place, an ExitStack, in that order."""
        console = self.console or Console(stderr=True)
        self.console = console
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            guard = SignalGuard()
            stack.callback(guard.restore)  # last of all: the handlers from before the search
            stack.enter_context(RunLock(self.run_dir))  # one master per run folder
            store = SearchStore(self.run_dir / "search.db", fingerprint(self.cfg))
            if device_shared(self.cfg):  # another candidate's memory can cause an oom
                store.limited = ("timeout", "oom")
            origin = getattr(self, "origin", None)
            if origin is not None:  # the start that created the folder (search/origin.py)
                store.keep_origin(origin)
            stack.callback(
                store.close
            )  # drops the uncommitted episodes: the agent may be mid-update
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
            stack.callback(executor.close)
            episodes = store.episodes()
            logger = build_logger(self.cfg, self.run_dir)
            stack.callback(logger.close)
            logger.catch_up(episodes)  # what a killed run committed but may never have sent
            # Best measured reward so far: predicted, failed and timed-out ones never count.
            self.best = max((e["reward"] for e in episodes if is_measured(e)), default=None)
            done = sum(e["status"] != "running" for e in episodes)
            running = store.running()
            console.print(
                startup_panel(
                    self.cfg,
                    self.run_dir,
                    self.total,
                    self.schedule.planned,
                    self.schedule,
                    executor.slots,
                    self.evaluator,
                    episodes,
                )
            )
            if done or running:
                console.print(
                    f"[bold]resuming[/] {self.run_dir}: {done} episodes done, {len(running)} to run again"
                )
            self.store, self.agent, self.executor, self.logger = store, agent, executor, logger
            self.pending: dict[
                int, tuple[int, float, Architecture]
            ] = {}  # sampled, not yet told, by episode
            # Episodes evaluated again as a fresh draw (agents with retrains_known, e.g.
            # evolution: a child already evaluated): episode -> (re-evaluation row, repeat).
            self.retrains: dict[int, tuple[int, int]] = {}
            self._unlogged: list = []  # logger calls waiting for the store's next commit
            self.retrains_known = bool(getattr(agent, "retrains_known", False))
            self.queue: list[int] = []  # sampled episodes waiting for a free executor slot
            self.ready: dict[
                int, tuple[dict, bool, bool]
            ] = {}  # (result, reused, predicted) not yet told
            self.in_flight_keys: dict[str, int] = {}  # canonical key -> episode being trained
            self.waiting: dict[str, list[int]] = {}  # key -> episodes waiting for that result
            self.progress = SearchProgress(console, self.total, done, self.best)
            finished = [e for e in episodes if e["status"] != "running"]
            fresh = store.retrained_episodes()  # reused rows that hold a fresh draw
            self.counts = dict.fromkeys(COUNTS, 0)
            for e in finished:
                if e["id"] not in fresh:  # a fresh draw is a re-evaluation (counted below)
                    self.counts[count_name(e["status"], e["reused"], e["predicted"])] += 1
            self.counts["reevaluated"] = sum(
                1 for r in store.reevaluations() if r["status"] != "running"
            )
            self._started = time.monotonic()
            self._committed_at = time.monotonic()
            self._uncommitted_work = 0.0  # evaluation seconds of the results not yet committed
            self._told_at_start = done
            # First on the way out: a signal while the outputs are written and the executor, the
            # logger, the store and the lock close is noted, never raised (closing takes seconds
            # to a minute; a scheduler's second SIGTERM must not cut it short).
            stack.callback(guard.defer)
            guard.arm()  # Ctrl-C and SIGTERM raise SearchInterrupted from here
            try:
                with self.progress:
                    self._loop(running)
                    self._reevaluate()  # the leading blocks again, with fresh seeds, before naming the best
                    self.agent.compact()  # a finished search's state restores fast (reports, extensions)
                    self._commit()
                guard.defer()  # the search is done: its outputs are written whatever comes now
                return self._finish_outputs(store, executor, logger, guard)
            except SearchFailed:  # raised after its episode was written: the state is consistent
                guard.defer()
                self._commit()
                raise
            except (KeyboardInterrupt, SearchInterrupted) as exc:
                guard.defer()
                how = (
                    "terminated (SIGTERM)"
                    if getattr(exc, "signum", None) == signal.SIGTERM
                    else "interrupted"
                )
                console.print(
                    f"\n[yellow]{how}[/]: finished episodes are saved in {self.run_dir / 'search.db'}; "
                    "evaluations in flight were stopped and run again on resume.",
                    soft_wrap=True,
                )
                console.print(
                    f"resume with: python search.py hydra.run.dir={self.run_dir}", soft_wrap=True
                )
                if getattr(exc, "signum", None) == signal.SIGTERM:
                    raise SearchTerminated() from None
                raise KeyboardInterrupt from None

    def _finish_outputs(self, store, executor, logger, guard: SignalGuard) -> dict | None:
        """The finished search's outputs, with stop signals noted, not raised (``guard``)."""
        console = self.console
        executor.close()
        episodes = store.episodes()
        reevaluations = store.reevaluations()
        top = write_outputs(
            self.run_dir, episodes, int(self.cfg.search.topk), reevaluations, self._network()
        )
        logger.finish(episodes, top, self.run_dir)
        console.print(summary_table(episodes, int(self.cfg.search.topk), reevaluations))
        console.print(outputs_line(self.run_dir, SEARCH_OUTPUTS))
        if guard.received:
            console.print(
                "[yellow]a stop signal came while the finished search wrote its outputs[/]: "
                "they are complete.",
                soft_wrap=True,
            )
        return top

    def _network(self) -> dict | None:
        """The searched network's spec for its drawing, from the config (the master of a pool
        or Ray search holds no data); None where the data's shape is not known without it."""
        if not self.space.has_network:
            return None  # the space's networks are fixed (NB201's tables)
        try:
            return network_spec(
                OmegaConf.to_container(self.cfg.network, resolve=True),
                OmegaConf.to_container(self.cfg.data, resolve=True),
                self.cfg.evaluator.get("num_classes"),
            )
        except ConfigError as exc:
            log.warning("no drawing of the network: %s", exc)
            return None

    def _loop(self, running) -> None:
        store, executor = self.store, self.executor
        # Evaluations in flight when the search stopped run again, in order.
        for row in running:
            self._start(
                row["id"],
                row["iteration"],
                row["epsilon"],
                self.space.parse(row["nsc"]),
                store.prediction(row["id"]),
            )
        self.episode = store.next_episode()
        if not self.asynchronous and self.episode % self.batch:
            self._sample_until(min(self.total, (self.episode // self.batch + 1) * self.batch))
        while self._more_to_sample() or self.pending:
            self._maybe_commit()
            if self.asynchronous:
                self._sample_until(
                    min(self.total, self.episode + executor.slots - len(self.pending))
                )
            elif not self.pending:  # a synchronous iteration: sample all its blocks first
                if (
                    self.reevaluate["every_iteration"]
                    and self.episode
                    and self.episode % self.batch == 0
                ):
                    self._reevaluate()  # the leaders of the iterations so far, before the next one
                self._sample_until(min(self.total, (self.episode // self.batch + 1) * self.batch))
            self._submit()
            self._tell_ready()
            if executor.in_flight:
                self._maybe_commit()
                for ep, result in executor.wait():
                    self._arrived(ep, result, reused=False)
                self._tell_ready()
            self._say_expected_time()

    def _trainings_spent(self) -> bool:
        """Whether ``search.max_trainings`` is reached: the blocks trained (first trainings,
        neither reused, predicted nor refused as invalid) and those being trained or queued to
        be."""
        if self.max_trainings is None:
            return False
        return self.counts["trained"] + len(self.in_flight_keys) >= self.max_trainings

    def _more_to_sample(self) -> bool:
        """Episodes left in the schedule (or under search.max_episodes) and trainings left in
        search.max_trainings; the first time the trainings run out, the search says so."""
        if self.episode >= self.total:
            return False
        if self._trainings_spent():
            if not getattr(self, "_said_spent", False):
                self._said_spent = True
                self.console.print(
                    f"{self.max_trainings:,} trainings reached (search.max_trainings) at episode "
                    f"{self.episode:,} of {self.total:,}: no more blocks are sampled"
                )
            return False
        return True

    def _say_expected_time(self) -> None:
        """Once, after the first iteration of a fresh run: the whole schedule's expected time."""
        if (
            self._told_at_start
            or getattr(self, "_said", False)
            or self.pending
            or self.episode < self.batch
        ):
            return
        self._said = True
        text = expected_time(self.store.episodes(), self.total - self.episode, self.executor.slots)
        if text and self.total > self.episode:
            self.console.print(
                f"expected time for the {self.total - self.episode:,} blocks left: {text}"
            )

    # ------------------------------------------------------------------ re-evaluation
    def _reevaluate(self) -> None:
        """Re-train the leading blocks with fresh seeds (``search.reevaluate``): rank the
        measured blocks by their mean reward; each of the ``top`` first that has fewer than
        ``repeats`` re-evaluations gets the rest, each its own row (its repeat index and seed)
        in the store's ``reevaluations`` table; the block's mean then replaces its reward in
        the agent's memory and in later reuse. Repeat while the ranking brings up blocks not yet
        re-evaluated (their single draw was lucky), at most ``max_rounds`` rounds; the search
        says so when the rounds run out first. A repeat that failed or timed out is tried again
        with the next seed, up to ``search.max_attempts`` lost repeats a block; failed ones count
        toward ``search.max_consecutive_failures``; the lost ones are reported. A round's
        choice is committed before it runs; what a stopped search left running is run first on
        resume, with the same seeds: resume is exact."""
        cfg = self.reevaluate
        # A round a stopped search had chosen is completed first, as chosen (same rows, seeds).
        self._run_rows([r for r in self.store.reevaluations() if r["status"] == "running"])
        if not cfg["top"] or not cfg["repeats"]:
            return
        for round_ in range(self.store.rounds(self.store.next_episode()), int(cfg["max_rounds"])):
            todo = self._reevaluation_todo()
            if not todo:
                self._say_lost_repeats()
                return
            self._run_reevaluations(todo, round_)
        self._say_lost_repeats()
        if self._reevaluation_todo():
            self.console.print(
                f"re-evaluation stopped after search.reevaluate.max_rounds={cfg['max_rounds']} "
                "rounds while the ranking still brought up blocks not re-evaluated: the best "
                "block is the best mean among the re-evaluated ones (raise max_rounds to go on)",
                soft_wrap=True,
            )

    def _reevaluation_todo(self) -> list[tuple[dict, int]]:
        """(block, repeat) pairs the next round would run: each of the ``top`` blocks by mean
        gets the repeats it lacks, numbered after all of its rows, unless its repeats were lost
        ``search.max_attempts`` times (it keeps what it has)."""
        cfg = self.reevaluate
        top = ranked(self.store.episodes(), self.store.reevaluations(), leaders_first=False)[
            : int(cfg["top"])
        ]
        return [pair for e in top for pair in self._lacking(e)]

    def _lacking(self, e: dict) -> list[tuple[dict, int]]:
        """The (block, repeat) pairs a block lacks to reach ``repeats`` measured re-evaluations,
        numbered after all of its rows; none once ``search.max_attempts`` of them were lost."""
        rows = self.store.attempts(e["key"])
        measured = self.store.measured_attempts(e["key"])
        if rows - measured >= self.max_attempts:
            return []
        return [(e, rows + i) for i in range(1, int(self.reevaluate["repeats"]) - measured + 1)]

    def _say_lost_repeats(self) -> None:
        lost = [r for r in self.store.reevaluations() if r["status"] in ("failed", "timeout")]
        if lost:
            self.console.print(
                f"re-evaluation: {len(lost)} repeat(s) failed or timed out "
                f"({len({r['key'] for r in lost})} block(s)); each was tried again with the next "
                "seed, up to search.max_attempts lost repeats a block",
                soft_wrap=True,
            )

    def _run_reevaluations(self, todo: list[tuple[dict, int]], round_: int) -> None:
        """Run a round's repeats; the ones lost (failed, timed out) are tried again within the
        round with the next seeds, up to ``search.max_attempts`` lost repeats a block."""
        chosen = {e["key"]: e for e, _ in todo}
        while todo:
            for e, repeat in todo:
                self.store.begin_reevaluation(
                    e["key"],
                    e["nsc"],
                    repeat,
                    evaluation_seed(int(self.cfg.seed), repeat),
                    self.store.next_episode(),
                    round_,
                )
            self._commit()  # the round's choice is saved before any of it runs: a resume completes it
            self._run_rows([r for r in self.store.reevaluations() if r["status"] == "running"])
            todo = [pair for e in chosen.values() for pair in self._lacking(e)]

    def _run_rows(self, rows: list[dict]) -> None:
        """Evaluate the re-evaluation rows (status running), as many at once as the executor
        has slots; each result is recorded, taught and committed as it arrives."""
        if not rows:
            return
        by_tag = {("re", r["id"]): r for r in rows}
        queue = list(by_tag)
        self.progress.update(
            self.episode,
            self.episode // self.batch,
            0.0,
            self.best,
            f"re-evaluating {len({r['key'] for r in rows})} leading blocks",
        )
        while queue or self.executor.in_flight:
            while queue and self.executor.in_flight < self.executor.slots:
                tag = queue.pop(0)
                self.executor.submit(
                    tag, json.loads(by_tag[tag]["nsc"]), int(by_tag[tag]["repeat"])
                )
            for tag, result in self.executor.wait():
                row = by_tag[tag]
                self.store.finish_reevaluation(row["id"], result)
                self.counts["reevaluated"] += 1
                if result.get("status") == "failed":  # not the block's fault: as for episodes
                    log.error("re-evaluation of %s failed:\n%s", row["key"], result.get("error"))
                    self.failures.append((self.episode, str(result.get("error") or "")))
                    if len(self.failures) >= self.max_failures:
                        self._commit()
                        self._raise_failed()
                else:
                    self.failures = []
                if is_measured(result):
                    self._relabel(row["key"])
                logged = {"key": row["key"], "repeat": row["repeat"], **result}
                self._unlogged.append(lambda logged=logged: self.logger.log_reevaluation(logged))
                self._uncommitted_work += float(result.get("wall_time") or 0.0)
                self._maybe_commit()  # group commits, as for episodes (a relabel snapshots the Q table)
        self._commit()

    def _relabel(self, key: str) -> None:
        """The block's mean over its evaluations replaces each reward of it in the agent's memory."""
        stats = self.store.key_stats(key)
        told = self.store.told_indices(key)
        if stats is not None and told:
            self.agent.relabel({i: stats["reward"] for i in told})

    def _sample_until(self, end: int) -> None:
        """Ask the agent for the blocks of episodes ``self.episode .. end - 1``. Each is
        recorded (status running) with the agent's state before anything else happens."""
        while self.episode < end and not self._trainings_spent():
            iteration = self.episode // self.batch
            epsilon = self.schedule.epsilon_at(self.episode, self.batch)
            block = self.agent.ask(epsilon)
            prediction = None
            if (
                self.predictor is not None
                and block.key not in self.in_flight_keys
                and self.store.lookup(block.key, self.max_attempts) is None
            ):
                train, mean, std = self.predictor.gate(block)
                if not train:
                    prediction = predicted_result(block, mean, std)
            self.store.begin(
                self.episode, iteration, epsilon, block.to_json(), block.key, prediction
            )
            self._start(self.episode, iteration, epsilon, block, prediction)
            self.episode += 1

    def _refresh_predictions(self) -> None:
        """After a refit: the new forest's estimate for every predicted episode taught so far
        replaces the old one in the agent's memory."""
        told = [(i, self.space.parse(nsc)) for i, nsc in self.predicted_told.values()]
        rewards = self.predictor.predict_many([b for _, b in told])
        self.agent.relabel({i: float(r) for (i, _), r in zip(told, rewards)})

    def _maybe_commit(self) -> None:
        if self.store.uncommitted and (
            self._uncommitted_work >= COMMIT_WORK_S
            or time.monotonic() - self._committed_at >= COMMIT_EVERY_S
        ):
            self._commit()

    def _commit(self) -> None:
        """Commit the episodes written since the last commit with the agent's state now (the
        loop calls it between episodes only), then hand what they hold to the loggers: a
        logger never holds what the store may lose, and what a kill between the two keeps from
        the loggers, their catch-up on resume logs (each logger knows what its files hold)."""
        self.store.commit(self._state())
        self._committed_at = time.monotonic()
        self._uncommitted_work = 0.0
        self._flush_logs()

    def _flush_logs(self) -> None:
        unlogged, self._unlogged = self._unlogged, []
        for log_it in unlogged:
            log_it()

    def _state(self) -> tuple[dict, dict]:
        """The agent's and the predictor's state, saved at each commit: small states, and
        the agent's large parts as the entries changed since the previous save."""
        small, parts = self.agent.checkpoint()
        return (
            {
                "agent": small,
                "predictor": self.predictor.state_dict() if self.predictor is not None else None,
            },
            {f"agent.{name}": entries for name, entries in parts.items()},
        )

    def _start(
        self,
        episode: int,
        iteration: int,
        epsilon: float,
        block: Architecture,
        prediction: dict | None = None,
    ):
        self.pending[episode] = (iteration, epsilon, block)
        if prediction is not None:  # the predictor's estimate stands in for training
            self.ready[episode] = (prediction, False, True)
        elif self.retrains_known and self._known(block.key):
            # Evaluated before (or being evaluated): a fresh draw, recorded as a re-evaluation
            # of the block (a resumed search runs it again with the same repeat).
            self.retrains[episode] = self.store.begin_retrain(
                block.key, block.to_json(), episode, int(self.cfg.seed)
            )
            self.queue.append(episode)
        elif (
            cached := self.store.lookup(block.key, self.max_attempts)
        ) is not None:  # evaluated: reuse
            self._arrived(episode, cached, reused=True)
        elif block.key in self.in_flight_keys:  # being trained right now: wait for that result
            self.waiting.setdefault(block.key, []).append(episode)
        else:
            self.in_flight_keys[block.key] = episode
            self.queue.append(episode)

    def _known(self, key: str) -> bool:
        """Whether a block with this key was evaluated (a result to reuse) or is in flight."""
        return key in self.in_flight_keys or self.store.lookup(key, self.max_attempts) is not None

    def _submit(self) -> None:
        while self.queue and self.executor.in_flight < self.executor.slots:
            episode = self.queue.pop(0)
            iteration, epsilon, block = self.pending[episode]
            self.progress.update(
                episode, iteration, epsilon, self.best, f"{self.executor.in_flight + 1} training"
            )
            self._maybe_commit()  # the local executor trains inside submit
            repeat = self.retrains[episode][1] if episode in self.retrains else 0
            self.executor.submit(episode, block.to_list(), repeat)

    def _arrived(self, episode: int, result: dict, reused: bool) -> None:
        if episode in self.retrains:  # a fresh draw of a known block: its re-evaluation row
            rid, _ = self.retrains[episode]
            self.store.finish_reevaluation(rid, result)
            self.ready[episode] = (result, True, False)
            return
        self.ready[episode] = (result, reused, False)
        block = self.pending[episode][2]
        if not reused and self.in_flight_keys.get(block.key) == episode:
            del self.in_flight_keys[block.key]
            waiting = self.waiting.pop(block.key, [])
            if (
                result.get("status") in RETRIED + self.store.limited
                and waiting
                and not self._timed_out_enough(block.key)
            ):
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
        arrived = sum(
            1
            for ep, (res, reused, predicted) in self.ready.items()
            if not reused
            and not predicted
            and res.get("status") in self.store.limited
            and self.pending[ep][2].key == key
        )
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
            log.error(
                "episode %d (block %s) failed:\n%s", episode, block.to_json(), result.get("error")
            )
            self.failures.append((episode, str(result.get("error") or "")))
        else:
            self.failures = []
            if (
                predicted
            ):  # the current forest's estimate (it may have been refitted since sampling)
                reward = float(self.predictor.predict_many([block])[0])
            self.agent.tell(block, reward)
            told = self.agent.told - 1
            if predicted:
                self.predicted_told[episode] = (told, block.to_list())
        # A new measurement, by the one predicate a resume reads them back with (store.measured):
        # failed and timed-out results never train the forest.
        if (
            self.predictor is not None
            and not reused
            and is_measured({**result, "predicted": predicted})
        ):
            self.measured.append((episode, block.to_list(), reward))
            if self.predictor.maybe_refit(self.measured) and self.predicted_told:
                self._refresh_predictions()
        self.store.finish(episode, result, reused, predicted, told)
        retrained = self.retrains.pop(episode, None) is not None
        if (not reused or retrained) and not predicted:
            self._uncommitted_work += float(result.get("wall_time") or 0.0)
        self.counts[
            "reevaluated" if retrained else count_name(result["status"], reused, predicted)
        ] += 1
        improved = is_measured({**result, "predicted": predicted}) and (
            self.best is None or reward > self.best
        )
        if improved:
            self.best = reward
        row = {
            "episode": episode,
            "iteration": iteration,
            "epsilon": epsilon,
            **result,
            "best_reward": self.best,
            "reused": int(reused),
            "predicted": int(predicted),
            "key": block.key,
            "nsc": json.dumps(block.to_list()),
            **self.counts,
            "elapsed_s": round(time.monotonic() - self._started, 3),
        }
        # Logged once the store has committed it (never before: a kill in between would log
        # it twice), the new best's drawing first, so W&B shows it with its episode's row.
        if improved:
            best = {
                "reward": reward,
                "accuracy": result.get("accuracy"),
                "nsc": block.to_list(),
                "key": block.key,
            }
            self._unlogged.append(lambda: self.logger.log_best(episode, best))
        self._unlogged.append(lambda: self.logger.log_episode(row))
        self.progress.advance(episode, iteration, epsilon, self.best, self.counts)
        if len(self.failures) >= self.max_failures:
            self._raise_failed()

    def _raise_failed(self) -> None:
        first_episode, first = self.failures[0]
        lines = [ln for ln in first.strip().splitlines() if ln.strip()]
        raise SearchFailed(
            f"{len(self.failures)} evaluations failed in a row (search.max_consecutive_failures="
            f"{self.max_failures}); this is not the candidates' fault. The first, episode {first_episode}: "
            f"{lines[-1] if lines else 'no error text'} (full tracebacks in the log). Finished episodes are "
            f"saved in {self.run_dir / 'search.db'}; after fixing the cause resume with: "
            f"python search.py hydra.run.dir={self.run_dir}"
        )

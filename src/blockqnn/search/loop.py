"""The search loop: sample blocks along the epsilon schedule, evaluate them (reusing the
stored result of any block already evaluated), teach the agent, record everything."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from omegaconf import DictConfig, OmegaConf

from blockqnn.agent import AGENTS, parse_schedule
from blockqnn.errors import ConfigError
from blockqnn.search.loggers import build_logger
from blockqnn.search.outputs import write_outputs
from blockqnn.search.store import SearchStore
from blockqnn.space.nsc import Block

EXECUTORS = ("local",)


def evaluator_config(cfg: DictConfig) -> dict:
    """The plain-dict config the evaluator needs (picklable, JSON-able)."""
    return {
        "seed": int(cfg.seed),
        "data": OmegaConf.to_container(cfg.data, resolve=True),
        "recipe": OmegaConf.to_container(cfg.recipe, resolve=True),
        "trainer": OmegaConf.to_container(cfg.trainer, resolve=True),
        "network": OmegaConf.to_container(cfg.network, resolve=True),
        "reward": OmegaConf.to_container(cfg.reward, resolve=True),
    }


def fingerprint(cfg: DictConfig) -> dict:
    """What must not change between a search and its resumption."""
    ev = evaluator_config(cfg)
    return {
        "seed": ev["seed"], "data": ev["data"], "recipe": ev["recipe"], "network": ev["network"],
        "reward": ev["reward"], "max_layers": int(cfg.space.max_layers),
        "agent": OmegaConf.to_container(cfg.agent, resolve=True),
    }


def build_agent(cfg: DictConfig):
    name = cfg.agent.name
    if name not in AGENTS:
        raise ConfigError(f"unknown agent {name!r}; known: {', '.join(AGENTS)}")
    params = OmegaConf.to_container(cfg.agent.params, resolve=True) or {}
    return AGENTS[name](max_layers=int(cfg.space.max_layers), seed=int(cfg.seed), **params)


def validate(cfg: DictConfig) -> None:
    """Refuse bad input before any training."""
    if cfg.executor.name not in EXECUTORS:
        raise ConfigError(f"executor={cfg.executor.name!r} is not available; known: {', '.join(EXECUTORS)}")
    parse_schedule(cfg.agent.epsilon_schedule)
    if int(cfg.agent.batch_size) <= 0:
        raise ConfigError(f"agent.batch_size={cfg.agent.batch_size} must be a positive integer")
    if not 1 <= int(cfg.space.max_layers) <= 64:
        raise ConfigError(f"space.max_layers={cfg.space.max_layers} must be in 1..64")
    if cfg.search.max_episodes is not None and int(cfg.search.max_episodes) <= 0:
        raise ConfigError(f"search.max_episodes={cfg.search.max_episodes} must be positive or null")
    build_agent(cfg)
    from blockqnn.evaluator.proxy import datamodule_for, resolve_config

    datamodule_for(resolve_config(evaluator_config(cfg)))  # loads the data: a missing folder fails here


class Search:
    def __init__(self, cfg: DictConfig, run_dir: Path, evaluate: Callable[[Any, dict], dict] | None = None,
                 console=None):
        from blockqnn.evaluator import evaluate as default_evaluate

        self.cfg = cfg
        self.run_dir = Path(run_dir)
        self.evaluate = evaluate or default_evaluate
        self.ev_cfg = evaluator_config(cfg)
        self.schedule = parse_schedule(cfg.agent.epsilon_schedule)
        self.batch = int(cfg.agent.batch_size)
        planned = self.schedule.episodes(self.batch)
        cap = cfg.search.max_episodes
        self.total = planned if cap is None else min(planned, int(cap))
        self.console = console

    def run(self) -> dict | None:
        from rich.console import Console

        from blockqnn.search.progress import SearchProgress

        console = self.console or Console(stderr=True)
        store = SearchStore(self.run_dir / "search.db", fingerprint(self.cfg))
        agent = build_agent(self.cfg)
        state = store.agent_state()
        if state is not None:
            agent.load_state_dict(state)
        logger = build_logger(OmegaConf.to_container(self.cfg.logger, resolve=True), self.run_dir,
                              OmegaConf.to_container(self.cfg, resolve=True))
        episodes = store.episodes()
        best = max((e["reward"] for e in episodes if e["status"] != "running"), default=None)
        done = sum(e["status"] != "running" for e in episodes)
        if done:
            console.print(f"[bold]resuming[/] {self.run_dir}: {done} episodes done, "
                          f"{len(store.running())} to run again")
        progress = SearchProgress(console, self.total, done, best)
        try:
            with progress:
                # Evaluations in flight when the search stopped run again, in order.
                for row in store.running():
                    best = self._evaluate(store, agent, logger, progress, row["id"], row["iteration"],
                                          row["epsilon"], Block.parse(row["nsc"]), best)
                episode = store.next_episode()
                while episode < self.total:
                    iteration = episode // self.batch
                    epsilon = self.schedule.epsilon_at(episode, self.batch)
                    block = agent.ask(epsilon)
                    store.begin(episode, iteration, epsilon, block.to_json(), block.key, agent.state_dict())
                    best = self._evaluate(store, agent, logger, progress, episode, iteration, epsilon, block, best)
                    episode += 1
        except KeyboardInterrupt:
            store.close()
            console.print(f"\n[yellow]interrupted[/]: finished episodes are saved in {self.run_dir / 'search.db'}."
                          f"\nresume with: python search.py hydra.run.dir={self.run_dir}")
            raise
        episodes = store.episodes()
        store.close()
        top = write_outputs(self.run_dir, episodes, int(self.cfg.search.topk))
        logger.finish(episodes, top, self.run_dir)
        from blockqnn.search.progress import summary_table

        console.print(summary_table(episodes, int(self.cfg.search.topk)))
        console.print(f"outputs in [bold]{self.run_dir}[/]: search.db, best_block.json, best_block.png, "
                      "topk.json, rewards.png")
        return top

    def _evaluate(self, store, agent, logger, progress, episode, iteration, epsilon, block, best):
        cached = store.lookup(block.key)
        if cached is not None:
            result, reused = cached, True
        else:
            progress.update(episode, iteration, epsilon, best, f"training block {episode}")
            result, reused = self.evaluate(block.to_list(), self.ev_cfg), False
        reward = float(result.get("reward") or 0.0)
        agent.tell(block, reward)
        store.finish(episode, result, agent.state_dict(), reused)
        best = reward if best is None else max(best, reward)
        logger.log_episode({"episode": episode, "iteration": iteration, "epsilon": epsilon, **result,
                            "best_reward": best, "reused": int(reused), "key": block.key,
                            "nsc": json.dumps(block.to_list())})
        progress.advance(episode, iteration, epsilon, best)
        return best

"""The paper's tabular Q-learning agent (BLOCKQNN.md section 4).

The agent walks any search space's decision process (:class:`blockqnn.space.base.SearchSpace`:
NSC layers then the Terminal; NB201's six edges). State (``state``): ``previous``, the paper's,
is the last decision ((0, 0, 0, 0, 0) before the first; an NSC layer carries its index, so the
state is "the current layer"); ``step`` is the decision's position alone (one state per NSC
layer index or NB201 edge: what every walk at that point shares, so the values generalise
across partial architectures); ``partial`` is every decision so far (one state per partial
architecture: nothing generalises). Action: the next decision (NSC: the next layer, or
Terminal). An episode samples one block; after each result the agent stores the (block,
reward) pair and replays ``replay_size`` stored trajectories, each from its last step
back to its first, with

    Q(s_t, a_t) <- (1 - lr) Q(s_t, a_t) + lr [r_t + discount * max_a' Q(s_t+1, a')]

where r_t = r_T / T at intermediate steps (reward shaping), r_T at the last, and the max term
is 0 at the terminal step. Unvisited pairs hold ``q_init``; argmax ties are broken at random.

Count bonus (``count_bonus`` = c > 0, a variant beyond the paper, off by default): a greedy step
picks the argmax of Q(s, a) + c / sqrt(1 + N(s, a)), where N(s, a) is the number of results
told whose block took action a in state s (UCB-style exploration inside the greedy policy: at
the paper's lr 0.01 and q_init 0.5, Q grows with the number of replays an action gets, so
without a bonus the greedy policy keeps to the actions it tried first). The counts are a
function of the replay memory, so they are rebuilt from it on restore.

Saving. The replays after the n-th result draw from their own generator, seeded by the agent's
seed and n, so the Q table is a function of the replay memory alone: the n-th table is the
(n-1)-th plus the n-th result's replays. A checkpoint therefore carries the memory appended
since the last (one entry per result) and, now and then, a snapshot of the whole table with
the count of results it includes; :meth:`QLearningAgent.restore` loads the last snapshot and
replays the results after it. A snapshot is written once the replay work since the previous
one exceeds ``SNAPSHOT_WORK`` times that snapshot's own cost (and at least ``SNAPSHOT_MIN_S``
of replays), so saving costs a bounded fraction of learning whatever the table's size, and a
resume replays a few seconds at most.
"""

from __future__ import annotations

import json
import math
import random
import time
from bisect import insort
from collections.abc import Sequence
from typing import Any

from blockqnn.agent.base import Agent
from blockqnn.errors import ConfigError
from blockqnn.space.base import SearchSpace
from blockqnn.space.nsc import actions_at  # noqa: F401  (re-exported: tests, older imports)

START = (0, 0, 0, 0, 0)
SNAPSHOT_MIN_S = 1.0  # replay seconds between snapshots, at least ...
SNAPSHOT_WORK = 8.0  # ... and this many times the previous snapshot's cost


STATES = ("previous", "step", "partial")


class QLearningAgent(Agent):
    name = "qlearning"

    def __init__(
        self,
        max_layers: int | None = None,
        seed: int = 0,
        space: SearchSpace | None = None,
        learning_rate: float = 0.1,  # = conf/agent/qlearning.yaml (tests/test_config_defaults.py)
        discount: float = 1.0,
        q_init: float = 1.0,  # the paper's 0.01 and 0.5: conf/agent/qlearning_paper.yaml
        replay_size: int = 64,
        reward_shaping: bool = True,
        explore: str = "type_first",  # the paper: uniform (conf/agent/qlearning_paper.yaml)
        replay_replacement: bool = True,
        count_bonus: float = 0.0,
        state: str = "previous",
    ):
        super().__init__(max_layers, seed, space)

        if explore not in ("uniform", "type_first"):
            raise ConfigError(f"agent.params.explore={explore!r}: uniform or type_first")
        if state not in STATES:
            raise ConfigError(f"agent.params.state={state!r}: one of {', '.join(STATES)}")
        self.state_kind = state
        # The legal actions of each step, and their number (the agent's hot loop reads them).
        self._legal = [self.space.actions(t) for t in range(self.space.max_steps)]
        checks = (
            ("learning_rate", learning_rate, 0.0, 1.0, False),
            ("discount", discount, 0.0, 1.0, True),
            ("q_init", q_init, None, None, True),
            ("replay_size", replay_size, 1, None, True),
            ("count_bonus", count_bonus, 0.0, None, True),
        )
        for name, value, low, high, low_ok in checks:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
                raise ConfigError(f"agent.params.{name}={value!r} must be a number")
            if (low is not None and (value < low or (value == low and not low_ok))) or (
                high is not None and value > high
            ):
                bounds = {
                    "learning_rate": "in (0, 1]",
                    "discount": "in [0, 1]",
                    "replay_size": ">= 1",
                    "count_bonus": ">= 0",
                }[name]
                raise ConfigError(f"agent.params.{name}={value} must be {bounds}")
        if replay_size != int(replay_size):
            raise ConfigError(f"agent.params.replay_size={replay_size} must be a whole number")
        self.explore = explore
        self.learning_rate = float(learning_rate)
        self.discount = float(discount)
        self.q_init = float(q_init)
        self.replay_size = int(replay_size)
        self.reward_shaping = bool(reward_shaping)
        self.replay_replacement = bool(replay_replacement)
        self.count_bonus = float(count_bonus)
        self._visits: dict[tuple, dict[tuple, int]] = {}  # N(s, a): results told that took a in s
        # Q[state][action] for visited pairs only; all others hold q_init.
        self.q: dict[tuple, dict[tuple, float]] = {}
        self._row_max: dict[tuple, float] = {}  # max of each visited row, kept on update
        self._ties: dict[tuple, list] = {}  # sorted actions at each row's max (absent: not known)
        self.memory: list[tuple[tuple[tuple[int, ...], ...], float]] = []
        self._replays: list[
            tuple[tuple, float]
        ] = []  # the memory as replayed: (_steps(trajectory), reward)
        self._saved_memory = 0  # replay memory entries already checkpointed
        self._snapshot_told: int | None = (
            None  # results in the last saved snapshot (None: none saved)
        )
        self._replay_s = 0.0  # replay time since that snapshot
        self._snapshot_s = 0.0  # what that snapshot cost
        self._resave: set[int] = set()  # memory entries relabelled since the last checkpoint
        self._snapshot_due = False  # relabelled: the next checkpoint must snapshot the table

    # ------------------------------------------------------------------ acting
    def _greedy(self, state: tuple, actions: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        row = self.q.get(state)
        if not row:
            return actions[self.rng.randrange(len(actions))]
        best = self._row_max[state]
        unvisited = len(row) < len(actions)
        if unvisited and self.q_init >= best:
            if self.q_init > best:
                ties = [a for a in actions if a not in row]
            else:
                ties = [a for a in actions if row.get(a, self.q_init) == best]
        else:  # the visited actions at the row's maximum, kept by the replays (sorted: a fixed order)
            ties = self._ties.get(state)
            if ties is None:
                ties = self._ties[state] = sorted(a for a, v in row.items() if v == best)
        return ties[self.rng.randrange(len(ties))]

    def _greedy_bonus(self, state: tuple, actions: tuple[tuple[int, ...], ...]) -> tuple[int, ...]:
        """The greedy step with the count bonus: argmax of Q + c / sqrt(1 + N), ties at random
        (in a fixed order, so a restored agent draws the same action)."""
        row = self.q.get(state, {})
        visits = self._visits.get(state, {})
        c, q0 = self.count_bonus, self.q_init
        known = set(row).union(visits)
        best, ties = -math.inf, []
        for a in known:
            v = row.get(a, q0) + c / math.sqrt(1 + visits.get(a, 0))
            if v > best:
                best, ties = v, [a]
            elif v == best:
                ties.append(a)
        if len(known) < len(actions):  # untried, unreplayed actions: q_init + c
            fresh = q0 + c
            if fresh >= best:
                others = [a for a in actions if a not in known]
                ties = others if fresh > best else ties + others
        ties.sort()
        return ties[self.rng.randrange(len(ties))]

    def _random_action(self, actions: tuple, step: int) -> tuple[int, ...]:
        """An exploration step: uniform over the legal actions (the paper's reading), or
        ``type_first``: the layer type uniform over the legal types, then its kernel and inputs
        uniform (so Terminal, add and concat are not drawn in proportion to how many input
        pairs they have)."""
        if self.explore == "uniform":
            return actions[self.rng.randrange(len(actions))]
        groups = self.space.action_groups(step)
        group = groups[self.rng.randrange(len(groups))]
        return group[self.rng.randrange(len(group))]

    def ask(self, epsilon: float = 1.0):
        body: list[tuple[int, ...]] = []
        state: tuple = self._state_at(body)
        while True:
            step = len(body)
            actions = self._legal[step]
            if self.rng.random() < epsilon:
                action = self._random_action(actions, step)
            elif self.count_bonus:
                action = self._greedy_bonus(state, actions)
            else:
                action = self._greedy(state, actions)
            body.append(action)
            if self.space.ends(step, action):
                return self.space.build(body)
            state = self._state_at(body)

    def _state_at(self, body: Sequence[tuple[int, ...]]) -> tuple:
        """The state before the next decision, given the decisions so far: the last decision
        (``previous``, the paper's: an NSC layer carries its index), the step alone (``step``),
        or every decision so far (``partial``)."""
        if self.state_kind == "previous":
            return body[-1] if body else START
        if self.state_kind == "step":
            return (len(body),)
        return tuple(body)

    # ------------------------------------------------------------------ learning
    def _steps(
        self, trajectory: tuple[tuple[int, ...], ...]
    ) -> tuple[tuple[tuple, tuple, int], ...]:
        """A trajectory's steps in replay order, last first: (state, action, number of legal
        actions in that state)."""
        states = [self._state_at(trajectory[:t]) for t in range(len(trajectory))]
        legal = self._legal
        return tuple(
            (states[t], trajectory[t], len(legal[t])) for t in range(len(trajectory) - 1, -1, -1)
        )

    def _replay(self, steps: tuple[tuple[tuple, tuple, int], ...], reward: float) -> None:
        """One backward pass over a stored trajectory (its ``_steps``). This is the agent's hot
        loop (64 trajectories per result): after updating Q(s_t, a_t), the max over the row of
        s_t (unvisited actions count as q_init) is the bootstrap term of step t - 1."""
        shaped = (
            reward / len(steps) if self.reward_shaping else 0.0
        )  # T, the Terminal action included
        lr, g, q0 = self.learning_rate, self.discount, self.q_init
        q, row_max, all_ties = self.q, self._row_max, self._ties
        target = reward  # the last step's target
        for state, action, legal in steps:
            row = q.get(state)
            if row is None:
                row = q[state] = {}
            old = row.get(action, q0)
            new = row[action] = (1 - lr) * old + lr * target
            top = row_max.get(state)
            if top is None or new > top:
                top = row_max[state] = new
                all_ties[state] = [action]
            elif new == top:
                if old != top and (ties := all_ties.get(state)) is not None:
                    insort(ties, action)  # joins the actions at the maximum
            elif old == top:  # the maximum itself went down: recompute (its ties when asked)
                top = row_max[state] = max(row.values())
                all_ties.pop(state, None)
            if len(row) < legal and q0 > top:  # unvisited actions hold q_init
                top = q0
            target = shaped + g * top

    def tell(self, block, reward: float) -> None:
        trajectory = self.space.decisions(block)
        self.memory.append((trajectory, float(reward)))
        self._replays.append((self._steps(trajectory), float(reward)))
        self._add_visits(self._replays[-1][0])
        self.told += 1
        start = time.perf_counter()
        self._learn(self.told)
        self._replay_s += time.perf_counter() - start

    def _add_visits(self, steps: tuple[tuple[tuple, tuple, int], ...]) -> None:
        """N(s, a) += 1 for every step of a told block (its ``_steps``); only the count bonus
        reads the counts, so without it none are kept."""
        if not self.count_bonus:
            return
        for state, action, _ in steps:
            row = self._visits.setdefault(state, {})
            row[action] = row.get(action, 0) + 1

    def _recount(self) -> None:
        self._visits = {}
        for steps, _ in self._replays:
            self._add_visits(steps)

    def _learn(self, n: int) -> None:
        """The replays after the n-th result: ``replay_size`` of the first n memory entries,
        drawn with replacement (the paper's reading) or without (at most n then), by a
        generator of (seed, n) alone."""
        replays = self._replays
        rng = random.Random(self.seed * 2**32 + n)
        draw = (
            rng.choices(range(n), k=self.replay_size)
            if self.replay_replacement
            else rng.sample(range(n), min(n, self.replay_size))
        )
        for i in draw:
            self._replay(*replays[i])

    def relabel(self, rewards: dict[int, float]) -> None:
        """New rewards for told results (the predictor's refreshed estimates): later replays
        learn from them. The next checkpoint re-saves those memory entries and snapshots the
        table, since replays before now used the old rewards."""
        changed = False
        for i, reward in rewards.items():
            reward = float(reward)
            if self.memory[i][1] != reward:
                self.memory[i] = (self.memory[i][0], reward)
                self._replays[i] = (self._replays[i][0], reward)
                self._resave.add(i)
                changed = True
        if changed:
            self._snapshot_due = True

    def compact(self) -> None:
        if self._snapshot_told != self.told:
            self._snapshot_due = True

    def q_value(self, state: tuple, action: tuple) -> float:
        return self.q.get(tuple(state), {}).get(tuple(action), self.q_init)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            **self._small_state(),
            # Sorted, so equal tables give equal states whatever the order of their updates.
            "q": [
                [list(s), [[list(a), row[a]] for a in sorted(row)]]
                for s, row in sorted(self.q.items())
            ],
            "memory": [[[list(la) for la in traj], r] for traj, r in self.memory],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self._hyper(state)
        self.q = {tuple(s): {tuple(a): v for a, v in row} for s, row in state["q"]}
        self._row_max = {s: max(row.values()) for s, row in self.q.items() if row}
        self._ties = {}
        self.memory = [(tuple(tuple(la) for la in traj), r) for traj, r in state["memory"]]
        self._replays = [(self._steps(traj), r) for traj, r in self.memory]
        self._recount()
        # Nothing of a full state is in a store's parts yet: the next checkpoint writes it all.
        self._saved_memory, self._snapshot_told, self._replay_s = 0, None, 0.0

    def _small_state(self) -> dict[str, Any]:
        """Everything but the Q table and the replay memory."""
        return {
            **Agent.state_dict(self),
            "hyper": [
                self.learning_rate,
                self.discount,
                self.q_init,
                self.replay_size,
                self.reward_shaping,
                self.explore,
                self.replay_replacement,
                self.count_bonus,
                self.state_kind,
            ],
        }

    def _hyper(self, state: dict[str, Any]) -> None:
        lr, g, q0, k, shaping, *rest = state["hyper"]  # older states lack the later entries
        self.learning_rate, self.discount, self.q_init, self.replay_size, self.reward_shaping = (
            lr,
            g,
            q0,
            k,
            shaping,
        )
        self.explore = rest[0] if rest else "uniform"
        self.replay_replacement = rest[1] if len(rest) > 1 else True
        self.count_bonus = rest[2] if len(rest) > 2 else 0.0
        self.state_kind = rest[3] if len(rest) > 3 else "previous"

    # Saving: the memory appended since the last checkpoint, and now and then a snapshot of the
    # table (see the module's docstring); restore replays the results after the snapshot.
    def checkpoint(self) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        fresh = range(self._saved_memory, len(self.memory))
        parts: dict[str, dict[str, Any]] = {
            "memory": {
                str(i): [[list(la) for la in self.memory[i][0]], self.memory[i][1]]
                for i in sorted(self._resave.union(fresh))
            }
        }
        self._saved_memory, self._resave = len(self.memory), set()
        if (
            self._snapshot_told is None
            or self._snapshot_due
            or (
                self.told > self._snapshot_told
                and self._replay_s >= max(SNAPSHOT_MIN_S, SNAPSHOT_WORK * self._snapshot_s)
            )
        ):
            self._snapshot_due = False
            start = time.perf_counter()
            parts["snapshot"] = {"q": json.dumps(self._table(), separators=(",", ":"))}
            self._snapshot_told, self._replay_s = self.told, 0.0
            self._snapshot_s = time.perf_counter() - start
        small = {
            **self._small_state(),
            "memory_len": len(self.memory),
            "snapshot_told": self._snapshot_told,
        }
        return small, parts

    def _table(self) -> list:
        """The Q table as JSON-able rows ``[state, [[action, value], ...]]``."""
        return [[list(s), [[list(a), v] for a, v in row.items()]] for s, row in self.q.items()]

    def restore(self, state: dict[str, Any], parts: dict[str, dict[str, Any]]) -> None:
        if "q" in state:  # a full state_dict (a store written before incremental saving)
            self.load_state_dict(state)
            return
        Agent.load_state_dict(self, state)
        self._hyper(state)
        memory = parts.get("memory", {})
        n = state["memory_len"]
        if len(memory) < n:
            raise ValueError(
                f"the saved Q-learning state lists {n} replay entries but {len(memory)} are stored"
            )
        self.memory = [
            (tuple(tuple(la) for la in memory[str(i)][0]), memory[str(i)][1]) for i in range(n)
        ]
        self._replays = [(self._steps(traj), r) for traj, r in self.memory]
        self._recount()
        self._saved_memory = n
        self.q = {}
        snapshot_told = state.get("snapshot_told")
        if snapshot_told is None:  # a store saved Q entry by entry (before snapshots)
            for key, value in parts.get("q", {}).items():
                s, a = json.loads(key)
                self.q.setdefault(tuple(s), {})[tuple(a)] = value
        else:
            self.q = {
                tuple(s): {tuple(a): v for a, v in row}
                for s, row in json.loads(parts["snapshot"]["q"])
            }
        self._row_max = {s: max(row.values()) for s, row in self.q.items() if row}
        self._ties = {}
        if snapshot_told is not None:  # the results after the snapshot, replayed as they were
            for told in range(snapshot_told + 1, self.told + 1):
                self._learn(told)
        self._snapshot_told, self._replay_s, self._snapshot_s = snapshot_told, 0.0, 0.0

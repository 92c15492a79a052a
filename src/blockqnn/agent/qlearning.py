"""The paper's tabular Q-learning agent (BLOCKQNN.md section 4).

State: the NSC of the current layer ((0, 0, 0, 0, 0) before the first). Action: the NSC of the
next layer, or Terminal. An episode samples one block; after each result the agent stores the
(block, reward) pair and replays ``replay_size`` stored trajectories, each from its last step
back to its first, with

    Q(s_t, a_t) <- (1 - lr) Q(s_t, a_t) + lr [r_t + discount * max_a' Q(s_t+1, a')]

where r_t = r_T / T at intermediate steps (reward shaping), r_T at the last, and the max term
is 0 at the terminal step. Unvisited pairs hold ``q_init``; argmax ties are broken at random.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from blockqnn.agent.base import Agent
from blockqnn.space.nsc import DEFAULT_MAX_LAYERS, Block, Layer, LayerType, legal_actions

START = (0, 0, 0, 0, 0)


@lru_cache(maxsize=None)
def _actions(index: int, max_layers: int) -> tuple[tuple[int, ...], ...]:
    """Legal actions at layer ``index`` (they depend on the index only), as plain tuples."""
    partial = [Layer(i, 4, 0, i - 1, 0) for i in range(1, index)]  # any valid prefix of that length
    return tuple(tuple(a) for a in legal_actions(partial, max_layers))


@lru_cache(maxsize=None)
def _count(index: int, max_layers: int) -> int:
    return len(_actions(index, max_layers))


class QLearningAgent(Agent):
    name = "qlearning"

    def __init__(
        self,
        max_layers: int = DEFAULT_MAX_LAYERS,
        seed: int = 0,
        learning_rate: float = 0.01,
        discount: float = 1.0,
        q_init: float = 0.5,
        replay_size: int = 64,
        reward_shaping: bool = True,
    ):
        super().__init__(max_layers, seed)
        self.learning_rate = float(learning_rate)
        self.discount = float(discount)
        self.q_init = float(q_init)
        self.replay_size = int(replay_size)
        self.reward_shaping = bool(reward_shaping)
        # Q[state][action] for visited pairs only; all others hold q_init.
        self.q: dict[tuple, dict[tuple, float]] = {}
        self._row_max: dict[tuple, float] = {}  # max of each visited row, kept on update
        self.memory: list[tuple[tuple[tuple[int, ...], ...], float]] = []

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
        else:
            ties = [a for a, v in row.items() if v == best]
            ties.sort()  # dict order depends on history; sort so ties are drawn from a fixed order
        return ties[self.rng.randrange(len(ties))]

    def ask(self, epsilon: float = 1.0) -> Block:
        body: list[tuple[int, ...]] = []
        state: tuple = START
        while True:
            actions = _actions(len(body) + 1, self.max_layers)
            if self.rng.random() < epsilon:
                action = actions[self.rng.randrange(len(actions))]
            else:
                action = self._greedy(state, actions)
            if action[1] == LayerType.TERMINAL:
                return Block(tuple(Layer(*a) for a in body) + (Layer(*action),))
            body.append(action)
            state = action

    # ------------------------------------------------------------------ learning
    def _max_q(self, state: tuple, index: int) -> float:
        row = self.q.get(state)
        if not row:
            return self.q_init
        best = self._row_max[state]
        if len(row) < _count(index, self.max_layers):
            best = max(best, self.q_init)
        return best

    def _replay(self, trajectory: tuple[tuple[int, ...], ...], reward: float) -> None:
        steps = len(trajectory)  # T, the Terminal action included
        shaped = reward / steps if self.reward_shaping else 0.0
        lr, g = self.learning_rate, self.discount
        for t in range(steps - 1, -1, -1):
            state = trajectory[t - 1] if t > 0 else START
            action = trajectory[t]
            if t == steps - 1:
                target = reward
            else:
                target = shaped + g * self._max_q(action, t + 2)
            row = self.q.setdefault(state, {})
            old = row.get(action, self.q_init)
            new = row[action] = (1 - lr) * old + lr * target
            top = self._row_max.get(state)
            if top is None or new >= top:
                self._row_max[state] = new
            elif old == top:  # the maximum itself went down: recompute
                self._row_max[state] = max(row.values())

    def tell(self, block: Block, reward: float) -> None:
        trajectory = tuple(tuple(int(v) for v in layer) for layer in block.layers)
        self.memory.append((trajectory, float(reward)))
        self.told += 1
        for i in self.rng.choices(range(len(self.memory)), k=self.replay_size):
            self._replay(*self.memory[i])

    def q_value(self, state: tuple, action: tuple) -> float:
        return self.q.get(tuple(state), {}).get(tuple(action), self.q_init)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        return {
            **super().state_dict(),
            "hyper": [self.learning_rate, self.discount, self.q_init, self.replay_size, self.reward_shaping],
            "q": [[list(s), [[list(a), v] for a, v in row.items()]] for s, row in self.q.items()],
            "memory": [[[list(la) for la in traj], r] for traj, r in self.memory],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        lr, g, q0, k, shaping = state["hyper"]
        self.learning_rate, self.discount, self.q_init, self.replay_size, self.reward_shaping = lr, g, q0, k, shaping
        self.q = {tuple(s): {tuple(a): v for a, v in row} for s, row in state["q"]}
        self._row_max = {s: max(row.values()) for s, row in self.q.items() if row}
        self.memory = [(tuple(tuple(la) for la in traj), r) for traj, r in state["memory"]]

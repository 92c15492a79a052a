"""Cost of the Q-learning agent: sample a 23-layer block and apply one result with 64 replays
(target: at most 5 ms, flat as episodes grow). Prints one JSON line last."""

import json
import random
import statistics
import time

from blockqnn.agent import QLearningAgent
from blockqnn.space.nsc import random_block


def main() -> dict:
    agent = QLearningAgent(max_layers=23, seed=0, replay_size=64)
    rng = random.Random(1)
    out = {"bench": "agent_cost", "replay_size": 64, "max_layers": 23}
    done = 0
    for checkpoint in (100, 1000, 5000):
        while done < checkpoint - 50:  # grow the memory and the Q table
            b = agent.ask(1.0 if done % 2 else 0.3)
            agent.tell(b, rng.random())
            done += 1
        times = []
        for _ in range(50):
            block = random_block(rng, 23, 23)  # a full 23-layer block's result (not timed)
            t = time.perf_counter()
            agent.ask(0.5)  # sample (epsilon 0.5: greedy and random steps)
            agent.tell(block, rng.random())
            times.append(time.perf_counter() - t)
            done += 1
        out[f"ms_at_{checkpoint}"] = round(1000 * statistics.median(times), 3)
    # The sampling of a 23-layer block alone, greedy (the worst case: argmax at every step).
    times = []
    for _ in range(50):
        t = time.perf_counter()
        agent.ask(0.0)
        times.append(time.perf_counter() - t)
    out["ask_greedy_ms"] = round(1000 * statistics.median(times), 3)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))

"""Cost of the Q-learning agent: sample a 23-layer block and apply one result with 64 replays
(target: at most 5 ms, flat as episodes grow), and the cost of recording an episode in the
search's SQLite store with a commit of its own and the agent's checkpoint (what a search with
real trainings does: each result is committed before the next training starts; instant
evaluators group many episodes per commit, see bench/master.py), up to the paper's 11,392
episodes; beside it, what writing the whole state as one JSON would cost. Prints one JSON
line last."""

import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from blockqnn.agent import QLearningAgent
from blockqnn.search.store import SearchStore
from blockqnn.space.nsc import random_block

RESULT = {
    "status": "ok",
    "reward": 0.5,
    "accuracy": 0.5,
    "flops": 1,
    "params": 1,
    "density": 1.0,
    "epochs": 12,
    "restarts": 0,
    "wall_time": 1.0,
    "error": None,
}


def main() -> dict:
    agent = QLearningAgent(max_layers=23, seed=0, replay_size=64)
    rng = random.Random(1)
    store = SearchStore(
        Path(tempfile.mkdtemp(prefix="bq-agent-cost-")) / "search.db", {"bench": "agent_cost"}
    )
    out = {"bench": "agent_cost", "replay_size": 64, "max_layers": 23}
    done = 0

    def episode(block=None, timed=False) -> tuple[float, float]:
        nonlocal done
        t = time.perf_counter()
        b = agent.ask(0.5 if timed else (1.0 if done % 2 else 0.3))
        t_ask = time.perf_counter()
        store.begin(done, done // 64, 0.5, b.to_json(), b.key)
        t_begin = time.perf_counter()
        agent.tell(block or b, rng.random())
        t_tell = time.perf_counter()
        store.finish(done, RESULT, told=done)
        store.commit(agent.checkpoint())
        t_end = time.perf_counter()
        done += 1
        return (t_ask - t) + (t_tell - t_begin), (t_begin - t_ask) + (t_end - t_tell)

    for checkpoint in (100, 1000, 5000, 11392):
        while done < checkpoint - 50:  # grow the memory and the Q table
            episode()
        agent_times, save_times = [], []
        for _ in range(50):
            block = random_block(rng, 23, 23)  # a full 23-layer block's result (not timed)
            a, s = episode(block, timed=True)
            agent_times.append(a)
            save_times.append(s)
        out[f"ms_at_{checkpoint}"] = round(1000 * statistics.median(agent_times), 3)
        out[f"save_ms_at_{checkpoint}"] = round(1000 * statistics.median(save_times), 3)
        t = time.perf_counter()
        whole = json.dumps(agent.state_dict())
        out[f"whole_json_ms_at_{checkpoint}"] = round(1000 * (time.perf_counter() - t), 1)
        out[f"whole_json_mb_at_{checkpoint}"] = round(len(whole) / 1e6, 2)
    store.close()
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

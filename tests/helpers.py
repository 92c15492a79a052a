"""Helpers shared by several test modules (tests import this, never each other)."""

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

from blockqnn.space.nsc import Block, LayerType, legal_actions

ROOT = Path(__file__).resolve().parents[1]

#: Tests that start Ray evaluation tasks or DDP ranks. Some tests find those by scanning every
#: process of the machine ("nothing left running"), so under pytest-xdist (the suite runs on two
#: workers) all of them run in one group, one after another, never beside each other.
MACHINE_WIDE = pytest.mark.xdist_group("machine_wide")


def search_argv(run_dir, *extra) -> list[str]:
    """``python search.py hydra.run.dir=<run_dir> <extra>``, as a user runs it."""
    return [sys.executable, str(ROOT / "search.py"), f"hydra.run.dir={run_dir}", *extra]


def finished(run_dir, table: str = "episodes", where: str = "status != 'running'") -> int:
    """Rows of a (possibly live, possibly absent) run's store that are done; 0 if unreadable."""
    try:
        con = sqlite3.connect(f"file:{Path(run_dir) / 'search.db'}?mode=ro", uri=True)
        n = con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
        con.close()
        return n
    except sqlite3.Error:
        return 0


@st.composite
def blocks(draw, max_layers=23):
    """Any valid block: a walk through the legal actions."""
    body = []
    while True:
        actions = legal_actions(body, max_layers)
        if not body:
            actions = [a for a in actions if a.type != LayerType.TERMINAL]
        action = draw(st.sampled_from(actions))
        if action.type == LayerType.TERMINAL:
            return Block(tuple(body) + (action,))
        body.append(action)


def assert_same_continuation(a, b, rng) -> None:
    """Two agents in the same state sample the same blocks and learn the same from them."""
    for _ in range(8):
        x, y = a.ask(0.3), b.ask(0.3)
        assert x == y
        reward = rng.random()
        a.tell(x, reward)
        b.tell(y, reward)
    assert json.dumps(a.state_dict()) == json.dumps(b.state_dict())


def save_checkpoint(store: dict, checkpoint) -> None:
    """What SearchStore does with a checkpoint: replace the small state, upsert part entries."""
    small, parts = json.loads(json.dumps(checkpoint))  # through JSON, as in the database
    store["state"] = small
    for part, entries in parts.items():
        store.setdefault("parts", {}).setdefault(part, {}).update(entries)

"""Helpers shared by several test modules (tests import this, never each other)."""

import json

from hypothesis import strategies as st

from blockqnn.space.nsc import Block, LayerType, legal_actions


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

"""The NSC: parsing, validation messages, legal actions, canonical keys, graph figures."""

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from blockqnn.errors import BlockError
from blockqnn.space.nsc import (
    Block,
    Layer,
    LayerType,
    legal_actions,
    random_block,
)
from tests.helpers import blocks  # noqa: E402

RESNET = "[[1,1,3,0,0],[2,1,3,1,0],[3,5,0,0,2],[4,7,0,0,0]]"


def renumber(block: Block, rng: random.Random, swap: bool = True) -> Block:
    """A random topological renumbering of ``block``, optionally swapping two-input orders."""
    body = block.body
    placed, order, waiting = {0}, [], [la.index for la in body]
    while waiting:
        ready = [i for i in waiting if all(p in placed for p in body[i - 1].preds)]
        pick = rng.choice(ready)
        order.append(pick)
        placed.add(pick)
        waiting.remove(pick)
    new = {0: 0, **{old: n for n, old in enumerate(order, 1)}}
    out = []
    for old in order:
        la = body[old - 1]
        p1, p2 = new[la.pred1], (new[la.pred2] if la.type in (5, 6) else 0)
        if swap and la.type in (5, 6) and rng.random() < 0.5:
            p1, p2 = p2, p1
        out.append([new[old], la.type, la.kernel, p1, p2])
    return Block.parse(out)


def test_parse_format_round_trip():
    b = Block.parse(RESNET)
    assert b.to_json() == RESNET
    assert Block.parse(b.to_json()) == b
    assert Block.parse(json.loads(RESNET)) == b
    assert Block.parse(b) == b
    # The Terminal may be left out on input.
    assert Block.parse(RESNET.replace(",[4,7,0,0,0]", "")) == b
    assert b.to_list(terminal=False) == json.loads(RESNET)[:-1]


def test_graph_figures():
    b = Block.parse(RESNET)
    assert (b.nodes, b.edges) == (3, 4)
    assert b.density == pytest.approx(4 / 3)
    assert b.depth == 3
    assert b.leaves == [3]
    branches = Block.parse([[1, 1, 3, 0, 0], [2, 2, 3, 0, 0], [3, 1, 1, 2, 0]])
    assert branches.leaves == [1, 3]
    assert branches.depth == 2
    assert branches.density == 1.0


MALFORMED = [
    ("[[1,1,3,0,0],[2,9,3,1,0]]", 2, "type"),
    ("[[1,1,2,0,0]]", 1, "kernel"),
    ("[[1,2,5,0,0]]", 1, "kernel"),
    ("[[1,4,3,0,0]]", 1, "kernel"),
    ("[[1,1,3,0,0],[2,1,3,2,0]]", 2, "predecessor-order"),
    ("[[1,1,3,0,0],[2,5,0,0,3]]", 2, "predecessor-order"),
    ("[[1,1,3,-1,0]]", 1, "predecessor-order"),
    ("[[1,1,3,0,0],[2,1,3,1,1]]", 2, "one-input"),
    ("[[1,1,3,0,0],[2,5,0,1,1]]", 2, "distinct-inputs"),
    ("[[1,1,3,0,0],[2,7,0,0,0],[3,1,3,1,0]]", 2, "terminal-last"),
    ("[[1,1,3,0,0],[2,7,0,1,0]]", 2, "terminal-preds"),
    ("[[1,1,3,0,0],[3,1,3,1,0]]", 3, "index-sequence"),
    ("[[1,1,3,0,0],[1,1,3,0,0]]", 1, "index-sequence"),
    ("[[1,1,3,0,0],[2,1,3.0,1,0]]", 2, "integer"),
    ('[[1,1,3,0,0],[2,1,"3",1,0]]', 2, "integer"),
    ("[[1,1,3,0,0],[2,1,3,true,0]]", 2, "integer"),
    ("[[1,1,3,0,0],[2,1,3,1]]", 2, "format"),
    ("[[1,1,3,0,0],5]", 2, "format"),
    ("[[1,7,0,0,0]]", 1, "empty"),
    ("[]", 1, "empty"),
    ('{"layers": 1}', None, "format"),
    ("[[1,1,3,0,0]", None, "json"),
    ("__import__('os').system('true')", None, "json"),
]


@pytest.mark.parametrize("text,layer,rule", MALFORMED)
def test_malformed_blocks_name_layer_and_rule(text, layer, rule):
    with pytest.raises(BlockError) as info:
        Block.parse(text)
    assert info.value.rule == rule
    assert info.value.layer == layer
    assert f"[rule: {rule}]" in str(info.value)
    if layer is not None:
        assert str(info.value).startswith(f"layer {layer}:")


def test_terminal_required_and_max_layers():
    with pytest.raises(BlockError) as info:
        Block.parse("[[1,1,3,0,0],[2,1,3,1,0]]", require_terminal=True)
    assert (info.value.layer, info.value.rule) == (3, "terminal-missing")
    with pytest.raises(BlockError) as info:
        Block.parse("[[1,1,3,0,0],[2,1,3,1,0],[3,1,3,2,0]]", max_layers=2)
    assert (info.value.layer, info.value.rule) == (3, "max-layers")
    assert len(Block.parse("[[1,1,3,0,0],[2,1,3,1,0]]", max_layers=2)) == 2


def test_malformed_lists_never_raise_bare_errors():
    for bad in (
        [None],
        [[]],
        [[1, 1, 3, 0, 0, 0]],
        [["a", 1, 3, 0, 0]],
        None,
        5,
        [[1, 1, 3, 0, 0], {}],
    ):
        with pytest.raises(BlockError):
            Block.parse(bad)


def test_legal_actions():
    first = legal_actions([], 23)
    assert all(a.index == 1 and a.preds == (0,) for a in first)
    assert not any(a.type == LayerType.TERMINAL for a in first)
    assert len(first) == 8  # conv 1/3/5, max 1/3, avg 1/3, identity: each from the input
    body = list(Block.parse(RESNET).body)
    acts = legal_actions(body, 23)
    # index 4: 8 one-input kinds x 4 preds + 2 two-input kinds x C(4,2) pairs + Terminal
    assert len(acts) == 8 * 4 + 2 * 6 + 1
    assert acts[-1].type == LayerType.TERMINAL
    assert legal_actions(body, 3) == [Layer(4, 7, 0, 0, 0)]
    for a in acts:
        Block.from_layers(body + [a])  # every legal action makes a valid block


@settings(max_examples=150, deadline=None)
@given(blocks(), st.randoms(use_true_random=False))
def test_key_invariant_to_renumbering_and_input_order(block, rng):
    Block.parse(block.to_json(), max_layers=23, require_terminal=True)
    other = renumber(block, rng)
    assert other.key == block.key
    assert other.canonical == block.canonical
    assert block.canonical.key == block.key


@settings(max_examples=150, deadline=None)
@given(blocks(), st.data())
def test_mutated_block_gets_a_different_key(block, data):
    """Changing one layer's type or kernel (same inputs) changes the DAG, so the key."""
    i = data.draw(st.integers(0, len(block) - 1))
    la = block.body[i]
    if la.type in (5, 6):
        new = la._replace(type=11 - la.type)  # add <-> concat
    elif la.type == 1:
        new = la._replace(
            kernel=data.draw(st.sampled_from([k for k in (1, 3, 5) if k != la.kernel]))
        )
    else:
        new = la._replace(type=1, kernel=3)
    layers = list(block.body)
    layers[i] = new
    mutated = Block.from_layers(layers)
    assert mutated.key != block.key


def test_sharing_differs_from_duplication():
    """Same tree of computations, different DAG: one shared 3x3 conv vs two copies."""
    shared = Block.parse([[1, 1, 3, 0, 0], [2, 1, 1, 1, 0], [3, 1, 1, 1, 0], [4, 5, 0, 2, 3]])
    copies = Block.parse(
        [[1, 1, 3, 0, 0], [2, 1, 3, 0, 0], [3, 1, 1, 1, 0], [4, 1, 1, 2, 0], [5, 5, 0, 3, 4]]
    )
    assert shared.key != copies.key
    # Input order of an add does not matter; which inputs it has does.
    a = Block.parse([[1, 1, 3, 0, 0], [2, 1, 1, 1, 0], [3, 5, 0, 2, 1]])
    b = Block.parse([[1, 1, 3, 0, 0], [2, 1, 1, 1, 0], [3, 5, 0, 1, 2]])
    c = Block.parse([[1, 1, 3, 0, 0], [2, 1, 1, 1, 0], [3, 5, 0, 0, 2]])
    assert a.key == b.key != c.key


def test_random_block_is_valid():
    rng = random.Random(0)
    for _ in range(200):
        b = random_block(rng, max_layers=23)
        assert Block.parse(b.to_json(), max_layers=23, require_terminal=True) == b


@settings(max_examples=100, deadline=None)
@given(blocks(), st.data())
def test_identity_equivalent_layers_share_a_key(block, data):
    """A 1x1 max pool, a 1x1 average pool and identity all compute the identity (stride 1):
    swapping one for another keeps the key (and the NSC as written); a 3x3 pool does not."""
    from blockqnn.space.nsc import _colour

    ident = [i for i, la in enumerate(block.body) if _colour(la) == (4, 0)]
    if not ident:
        i = data.draw(st.integers(0, len(block) - 1))
        if block.body[i].type in (5, 6):
            return
        layers = list(block.body)
        layers[i] = layers[i]._replace(type=4, kernel=0)
        block = Block.from_layers(layers)
        ident = [i]
    i = data.draw(st.sampled_from(ident))
    for typ, kernel in ((2, 1), (3, 1), (4, 0)):
        layers = list(block.body)
        layers[i] = layers[i]._replace(type=typ, kernel=kernel)
        other = Block.from_layers(layers)
        assert other.key == block.key
        assert other.body[i].type == typ  # the block keeps what was sampled
    layers = list(block.body)
    layers[i] = layers[i]._replace(type=2, kernel=3)
    assert Block.from_layers(layers).key != block.key

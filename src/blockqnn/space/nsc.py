"""The Network Structure Code (NSC) of BlockQNN: a block as a list of 5-tuple layers.

Each layer is ``(index, type, kernel, pred1, pred2)`` (BLOCKQNN.md section 2). Index 0 is the
block's input, layers are numbered 1, 2, ... in order, and a predecessor is an earlier index.
The block ends with a Terminal layer; the outputs of layers that no other layer uses are
concatenated into the block's output.

This module is pure Python: parsing, validation, the agent's legal-action set, a canonical key
and graph figures. Building torch modules lives in :mod:`blockqnn.space.network`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cache, cached_property
from typing import Any, NamedTuple

from blockqnn.errors import BlockError, ConfigError
from blockqnn.space.base import SearchSpace

#: The paper's maximum layer index during the search (Terminal not counted).
DEFAULT_MAX_LAYERS = 23


class LayerType(IntEnum):
    CONV = 1
    MAX_POOL = 2
    AVG_POOL = 3
    IDENTITY = 4
    ADD = 5
    CONCAT = 6
    TERMINAL = 7


#: Kernel sizes each layer type allows (BLOCKQNN.md section 2).
KERNELS: dict[LayerType, tuple[int, ...]] = {
    LayerType.CONV: (1, 3, 5),
    LayerType.MAX_POOL: (1, 3),
    LayerType.AVG_POOL: (1, 3),
    LayerType.IDENTITY: (0,),
    LayerType.ADD: (0,),
    LayerType.CONCAT: (0,),
    LayerType.TERMINAL: (0,),
}
ONE_INPUT = frozenset({LayerType.CONV, LayerType.MAX_POOL, LayerType.AVG_POOL, LayerType.IDENTITY})
TWO_INPUT = frozenset({LayerType.ADD, LayerType.CONCAT})
SHORT_NAMES = {
    LayerType.CONV: "conv",
    LayerType.MAX_POOL: "max",
    LayerType.AVG_POOL: "avg",
    LayerType.IDENTITY: "id",
    LayerType.ADD: "add",
    LayerType.CONCAT: "cat",
    LayerType.TERMINAL: "end",
}


class Layer(NamedTuple):
    """One NSC layer: ``(index, type, kernel, pred1, pred2)``."""

    index: int
    type: int
    kernel: int
    pred1: int
    pred2: int

    @property
    def preds(self) -> tuple[int, ...]:
        """The layer's inputs (one for one-input layers, two for add and concat)."""
        if self.type in TWO_INPUT:
            return (self.pred1, self.pred2)
        if self.type == LayerType.TERMINAL:
            return ()
        return (self.pred1,)

    @property
    def label(self) -> str:
        name = SHORT_NAMES[LayerType(self.type)]
        return f"{name}{self.kernel}" if self.type in (1, 2, 3) else name


TERMINAL_CODE = (LayerType.TERMINAL, 0, 0, 0)


def _check_int(value: Any, layer: int | None, what: str) -> int:
    # bool is an int subclass in Python and JSON true/false must not pass as 1/0.
    if isinstance(value, bool) or not isinstance(value, int):
        raise BlockError(f"{what} must be an integer, got {value!r}", layer, "integer")
    return value


def _check_layer(raw: Any, position: int, max_layers: int | None) -> Layer:
    expected = position + 1
    if not isinstance(raw, (list, tuple)) or len(raw) != 5:
        raise BlockError(
            f"must be a list of 5 integers [index, type, kernel, pred1, pred2], got {raw!r}",
            expected,
            "format",
        )
    index = _check_int(raw[0], expected, "index")
    names = ("type", "kernel", "pred1", "pred2")
    typ, kernel, pred1, pred2 = (_check_int(v, index, n) for v, n in zip(raw[1:], names))
    if index != expected:
        what = "repeats an earlier index" if index < expected else "leaves a gap"
        raise BlockError(
            f"index {index} {what}: layers are numbered 1, 2, ... in order, expected {expected}",
            index,
            "index-sequence",
        )
    if typ not in LayerType._value2member_map_:
        raise BlockError(
            f"unknown layer type {typ}: types are 1 conv, 2 max pool, 3 avg pool, 4 identity, "
            "5 add, 6 concat, 7 terminal",
            index,
            "type",
        )
    kind = LayerType(typ)
    if kernel not in KERNELS[kind]:
        raise BlockError(
            f"kernel {kernel} is not allowed for {kind.name.lower()} (allowed: "
            f"{', '.join(map(str, KERNELS[kind]))})",
            index,
            "kernel",
        )
    if kind == LayerType.TERMINAL:
        if pred1 != 0 or pred2 != 0:
            raise BlockError(
                "terminal takes no predecessors (pred1 = pred2 = 0)", index, "terminal-preds"
            )
        return Layer(index, typ, kernel, pred1, pred2)
    if max_layers is not None and index > max_layers:
        raise BlockError(
            f"the block has more than the maximum of {max_layers} layers", index, "max-layers"
        )
    for name, pred in (("pred1", pred1), ("pred2", pred2)):
        if pred < 0 or pred >= index:
            if name == "pred2" and kind in ONE_INPUT:
                break  # reported below as a one-input violation
            raise BlockError(
                f"{name} = {pred} is not an earlier layer (must be in 0..{index - 1})",
                index,
                "predecessor-order",
            )
    if kind in ONE_INPUT and pred2 != 0:
        raise BlockError(
            f"{kind.name.lower()} takes one input: pred2 must be 0, got {pred2}", index, "one-input"
        )
    if kind in TWO_INPUT and pred1 == pred2:
        raise BlockError(
            f"{kind.name.lower()} needs two different inputs, got {pred1} twice",
            index,
            "distinct-inputs",
        )
    return Layer(index, typ, kernel, pred1, pred2)


def _colour(layer: Layer) -> tuple[int, int]:
    """A layer's colour in the canonical labelling: its (type, kernel), except that the layers
    that compute the identity (a 1x1 max or average pool at stride 1, and identity itself)
    share identity's, so blocks that differ only there are one block."""
    if layer.type == LayerType.IDENTITY or (
        layer.type in (LayerType.MAX_POOL, LayerType.AVG_POOL) and layer.kernel == 1
    ):
        return (int(LayerType.IDENTITY), 0)
    return (int(layer.type), int(layer.kernel))


_CANONICAL: dict[tuple, Block] = {}  # layers -> canonical form (Block.canonical)
_CANONICAL_MAX = 200_000


@dataclass(frozen=True)
class Block:
    """A validated block. ``layers`` always ends with the Terminal layer."""

    layers: tuple[Layer, ...]

    #: A block is stacked into a network (best_network.png); a NAS-Bench-201 cell's is fixed.
    has_network = True

    # ----------------------------------------------------------------- construction
    @classmethod
    def parse(
        cls,
        obj: str | Sequence[Sequence[int]] | Block,
        *,
        max_layers: int | None = None,
        require_terminal: bool = False,
    ) -> Block:
        """Parse a block from its JSON text, a list of lists, or a Block.

        The closing Terminal may be left out unless ``require_terminal``. Parsing never
        evaluates code: text goes through ``json.loads`` only.
        """
        if isinstance(obj, Block):
            raw: Any = obj.to_list()
        elif isinstance(obj, (str, bytes)):
            text = obj.decode() if isinstance(obj, bytes) else obj
            try:
                raw = json.loads(text)
            except json.JSONDecodeError as exc:
                raise BlockError(
                    f"block text is not valid JSON ({exc.msg} at char {exc.pos})", None, "json"
                ) from None
        else:
            raw = obj
        if not isinstance(raw, (list, tuple)):
            raise BlockError(
                f"a block is a list of layers, got {type(raw).__name__}", None, "format"
            )
        layers: list[Layer] = []
        for position, item in enumerate(raw):
            if layers and layers[-1].type == LayerType.TERMINAL:
                raise BlockError(
                    "terminal must be the last layer", layers[-1].index, "terminal-last"
                )
            layers.append(_check_layer(item, position, max_layers))
        if not layers or (len(layers) == 1 and layers[0].type == LayerType.TERMINAL):
            raise BlockError("a block needs at least one layer before the terminal", 1, "empty")
        if layers[-1].type != LayerType.TERMINAL:
            if require_terminal:
                raise BlockError(
                    "the block does not end with a terminal layer [n, 7, 0, 0, 0]",
                    layers[-1].index + 1,
                    "terminal-missing",
                )
            layers.append(Layer(layers[-1].index + 1, *TERMINAL_CODE))
        return cls(tuple(layers))

    @classmethod
    def from_layers(cls, layers: Iterable[Sequence[int]], **kwargs: Any) -> Block:
        return cls.parse([list(layer) for layer in layers], **kwargs)

    # ----------------------------------------------------------------- text forms
    def to_list(self, terminal: bool = True) -> list[list[int]]:
        return [list(map(int, layer)) for layer in (self.layers if terminal else self.body)]

    def to_json(self, terminal: bool = True) -> str:
        return json.dumps(self.to_list(terminal), separators=(",", ":"))

    def __str__(self) -> str:
        return self.to_json()

    def labels(self) -> dict[str, Any]:
        """Extra names of the block in best_block.json and topk.json (none: the NSC is its name)."""
        return {}

    def parts(self) -> list[str]:
        """The block's layer kinds (per-kind shares in the analysis)."""
        return [SHORT_NAMES[LayerType(la.type)] for la in self.body]

    def compact(self) -> str:
        """One line: ``1:conv3 2:max3(1) 3:add(1,2)``; a layer's inputs are shown unless it
        takes the block's input only."""
        parts = []
        for layer in self.body:
            ins = "" if layer.preds == (0,) else "(" + ",".join(map(str, layer.preds)) + ")"
            parts.append(f"{layer.index}:{layer.label}{ins}")
        return " ".join(parts)

    # ----------------------------------------------------------------- graph figures
    @property
    def body(self) -> tuple[Layer, ...]:
        """The computing layers (Terminal left out)."""
        return self.layers[:-1]

    def __len__(self) -> int:
        return len(self.body)

    @cached_property
    def consumers(self) -> dict[int, list[int]]:
        users: dict[int, list[int]] = {i: [] for i in range(len(self.body) + 1)}
        for layer in self.body:
            for p in layer.preds:
                users[p].append(layer.index)
        return users

    @property
    def leaves(self) -> list[int]:
        """Layers whose output no other layer uses: concatenated into the block's output."""
        return [layer.index for layer in self.body if not self.consumers[layer.index]]

    @property
    def nodes(self) -> int:
        """Computing layers of the DAG (the input and the Terminal are not counted)."""
        return len(self.body)

    @property
    def edges(self) -> int:
        """Predecessor links (each one-input layer has one, each add or concat two)."""
        return sum(len(layer.preds) for layer in self.body)

    @property
    def density(self) -> float:
        """edges / nodes: 1.0 for a chain or a tree of one-input layers, up to 2."""
        return self.edges / self.nodes

    @cached_property
    def depth(self) -> int:
        """Layers on the longest path from the input to the output."""
        level = [0] * (len(self.body) + 1)
        for layer in self.body:
            level[layer.index] = 1 + max(level[p] for p in layer.preds)
        return max(level[i] for i in self.leaves)

    # ----------------------------------------------------------------- canonical form
    @cached_property
    def canonical(self) -> Block:
        """The same architecture, renumbered canonically and with two-input layers' inputs
        sorted. Blocks differ in canonical form exactly when their DAGs differ. Memoised by
        layers (a search samples the same blocks again and again; a labelling costs ~1 ms)."""
        known = _CANONICAL.get(self.layers)
        if known is None:
            if len(_CANONICAL) >= _CANONICAL_MAX:
                _CANONICAL.clear()
            known = _CANONICAL[self.layers] = self._canonical()
        return known

    def _canonical(self) -> Block:
        # bliss canonical labelling of the coloured DAG. Imported here, not at the top: igraph
        # imports matplotlib (0.5 s), which every process that imports the package (evaluation
        # workers, DDP ranks, every entry script) would pay, and only labelling needs it.
        import igraph

        body = self.body
        labels = [(0, 0)] + [_colour(layer) for layer in body]
        palette = sorted(set(labels))
        graph = igraph.Graph(
            n=len(labels),
            edges=[(p, layer.index) for layer in body for p in layer.preds],
            directed=True,
        )
        graph.vs["c"] = [palette.index(lab) for lab in labels]
        canon = graph.permute_vertices(graph.canonical_permutation(color="c"))
        kinds = [palette[c] for c in canon.vs["c"]]
        preds = [sorted(canon.predecessors(v)) for v in range(len(labels))]
        # Topological order with ties broken by canonical vertex id: a canonical numbering.
        source = kinds.index((0, 0))
        new_index = {source: 0}
        waiting = set(range(len(labels))) - {source}
        layers = []
        while waiting:
            v = min(i for i in waiting if all(p in new_index for p in preds[i]))
            waiting.remove(v)
            new_index[v] = len(new_index)
            ins = sorted(new_index[p] for p in preds[v]) + [0]
            layers.append(Layer(new_index[v], kinds[v][0], kinds[v][1], ins[0], ins[1]))
        layers.append(Layer(len(layers) + 1, *TERMINAL_CODE))
        return Block(tuple(layers))

    @cached_property
    def key(self) -> str:
        """A short canonical key: equal for blocks that differ only in layer numbering or in
        the order of an add's or concat's inputs, different for different DAGs."""
        digest = hashlib.sha256(self.canonical.to_json().encode()).hexdigest()
        return digest[:24]


def legal_actions(partial: Sequence[Layer], max_layers: int = DEFAULT_MAX_LAYERS) -> list[Layer]:
    """The legal next layers after ``partial`` (computing layers so far, no Terminal).

    This is the agent's action set. Two-input layers are listed once per unordered pair
    (pred1 < pred2). Terminal is legal once there is at least one layer, and is the only
    action once ``max_layers`` layers are placed.
    """
    index = len(partial) + 1
    if index > max_layers:
        return [Layer(index, *TERMINAL_CODE)]
    actions: list[Layer] = []
    for kind in ONE_INPUT:
        for kernel in KERNELS[kind]:
            actions.extend(Layer(index, kind.value, kernel, p, 0) for p in range(index))
    for kind in TWO_INPUT:
        actions.extend(
            Layer(index, kind.value, 0, p1, p2) for p2 in range(1, index) for p1 in range(p2)
        )
    actions.sort()
    if index > 1:
        actions.append(Layer(index, *TERMINAL_CODE))
    return actions


def random_block(rng, max_layers: int = DEFAULT_MAX_LAYERS, min_layers: int = 1) -> Block:
    """A uniformly random walk through the legal actions (``rng`` is a ``random.Random``):
    what random search and epsilon = 1 sample."""
    body: list[Layer] = []
    while True:
        actions = legal_actions(body, max_layers)
        if len(body) < min_layers:
            actions = [a for a in actions if a.type != LayerType.TERMINAL] or actions
        action = actions[rng.randrange(len(actions))]
        if action.type == LayerType.TERMINAL:
            return Block(tuple(body) + (action,))
        body.append(action)


@cache
def actions_at(index: int, max_layers: int) -> tuple[tuple[int, ...], ...]:
    """Legal actions at layer ``index`` (they depend on the index only), as plain tuples."""
    partial = [Layer(i, 4, 0, i - 1, 0) for i in range(1, index)]  # any valid prefix of that length
    return tuple(tuple(a) for a in legal_actions(partial, max_layers))


@cache
def actions_by_type(index: int, max_layers: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
    """The legal actions at layer ``index`` grouped by layer type."""
    groups: dict[int, list] = {}
    for a in actions_at(index, max_layers):
        groups.setdefault(a[1], []).append(a)
    return tuple(tuple(groups[t]) for t in sorted(groups))


class NSCSpace(SearchSpace):
    """BlockQNN's blocks of up to ``max_layers`` computing layers (``space=nsc``, the default).
    A walk picks the layers one by one, then the Terminal; the key is the canonical labelling
    of the block's DAG (:attr:`Block.key`)."""

    name = "nsc"
    has_network = True

    def __init__(self, max_layers: int = DEFAULT_MAX_LAYERS, name: str = "nsc"):
        if isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1:
            raise ConfigError(f"space.max_layers={max_layers!r} must be a positive integer")
        self.max_layers = int(max_layers)
        self.max_steps = self.max_layers + 1

    def parse(self, obj: Any) -> Block:
        return Block.parse(obj, max_layers=self.max_layers)

    def claims(self, obj: Any) -> bool:
        try:
            Block.parse(obj)
        except BlockError:
            return False
        return True

    def sample(self, rng) -> Block:
        return random_block(rng, self.max_layers)

    def actions(self, step: int) -> tuple[tuple[int, ...], ...]:
        return actions_at(step + 1, self.max_layers)

    def action_groups(self, step: int) -> tuple[tuple[tuple[int, ...], ...], ...]:
        return actions_by_type(step + 1, self.max_layers)

    def ends(self, step: int, action: Sequence[int]) -> bool:
        return action[1] == LayerType.TERMINAL

    def normal_action(self, step: int, action: Sequence[int]) -> tuple[int, ...]:
        idx, typ, kernel, p1, p2 = (int(v) for v in action)
        if typ in TWO_INPUT:
            p1, p2 = min(p1, p2), max(p1, p2)
        return (idx, typ, kernel, p1, p2)

    def build(self, actions: Sequence[Sequence[int]]) -> Block:
        return Block(tuple(Layer(*a) for a in actions))

    def decisions(self, arch: Block) -> tuple[tuple[int, ...], ...]:
        return tuple(tuple(int(v) for v in layer) for layer in arch.layers)

    def fingerprint(self) -> dict[str, Any]:
        # The key the fingerprint had before spaces were pluggable: NSC folders keep resuming.
        return {"max_layers": self.max_layers}

    def describe(self) -> str:
        return f"blocks of up to {self.max_layers} layers"

    def state_dict(self) -> dict[str, Any]:
        return {"max_layers": self.max_layers}

    # ------------------------------------------------------------------ evolution's moves
    def mutate(self, arch: Block, rng) -> Block:
        """One random change (regularized evolution): a layer's type, kernel or input, or a
        layer added (spliced into an edge, or a new branch) or removed (its consumers take its
        input); always a valid block other than the parent (a random block after 100 tries)."""
        moves = ("type", "kernel", "input", "add", "remove")
        for _ in range(100):
            move = rng.choice(moves)
            layers = [list(la) for la in arch.body]
            if move == "add":
                layers = self._insert(layers, rng)
            elif move == "remove":
                layers = self._remove(layers, rng)
            else:
                layers = self._change(layers, rng, move)
            if layers is None:
                continue
            try:
                child = Block.parse(layers, max_layers=self.max_layers)
            except BlockError:
                continue
            if child.key != arch.key:
                return child
        return random_block(rng, self.max_layers)

    def _change(self, layers: list[list[int]], rng, what: str) -> list[list[int]] | None:
        i = rng.randrange(len(layers))
        idx, typ, kernel, p1, p2 = layers[i]
        if what == "type":
            kind = LayerType(
                rng.choice([t for t in LayerType if t not in (typ, LayerType.TERMINAL)])
            )
            kernel = rng.choice(KERNELS[kind])
            if kind in TWO_INPUT and idx < 2:
                return None
            if kind in TWO_INPUT and typ not in TWO_INPUT:
                p2 = rng.choice([p for p in range(idx) if p != p1])
            elif kind in ONE_INPUT:
                p2 = 0
            typ = kind.value
        elif what == "kernel":
            choices = [k for k in KERNELS[LayerType(typ)] if k != kernel]
            if not choices:
                return None
            kernel = rng.choice(choices)
        else:
            if idx < 2:
                return None
            if typ in TWO_INPUT and rng.random() < 0.5:
                p2 = rng.choice([p for p in range(idx) if p not in (p1, p2)] or [p2])
            else:
                p1 = rng.choice([p for p in range(idx) if p not in (p1, p2)] or [p1])
        layers[i] = [idx, typ, kernel, p1, p2]
        return layers

    def _insert(self, layers: list[list[int]], rng) -> list[list[int]] | None:
        """A new one-input layer at a random position, reading an earlier output; one later
        layer that read that output reads the new layer instead (spliced into the edge) when
        there is one, otherwise the new layer is a new branch of the block's output."""
        if len(layers) >= self.max_layers:
            return None
        at = rng.randrange(1, len(layers) + 2)  # the new layer's index
        kind = LayerType(rng.choice(sorted(ONE_INPUT)))
        src = rng.randrange(at)
        new = [at, kind.value, rng.choice(KERNELS[kind]), src, 0]
        shifted = []
        for idx, typ, kernel, p1, p2 in layers:
            bump = (lambda p: p + 1 if p >= at else p) if idx >= at else (lambda p: p)
            shifted.append(
                [idx + (idx >= at), typ, kernel, bump(p1), bump(p2) if typ in TWO_INPUT else 0]
            )
        readers = [
            (j, slot)
            for j, la in enumerate(shifted)
            if la[0] > at
            for slot in ((3, 4) if la[1] in TWO_INPUT else (3,))
            if la[slot] == src
        ]
        if readers:
            j, slot = readers[rng.randrange(len(readers))]
            shifted[j][slot] = at
        return sorted(shifted + [new])

    def _remove(self, layers: list[list[int]], rng) -> list[list[int]] | None:
        """A random layer removed: what read it reads its (first) input; later layers renumbered."""
        if len(layers) < 2:
            return None
        at = rng.randrange(1, len(layers) + 1)
        gone = layers[at - 1]
        out = []
        for idx, typ, kernel, p1, p2 in layers:
            if idx == at:
                continue

            def fix(p: int) -> int:
                p = gone[3] if p == at else p
                return p - 1 if p > at else p

            out.append([idx - (idx > at), typ, kernel, fix(p1), fix(p2) if typ in TWO_INPUT else 0])
        return out

    def neighbours(self, arch: Block) -> list[Block]:
        """Every block one layer's type, kernel or input away (distinct keys, the parent left
        out); adding and removing layers are left out (a neighbourhood of that size is a
        local search's, which none of our strategies runs)."""
        seen, out = {arch.key}, []
        body = list(arch.body)
        for i, layer in enumerate(body):
            for alt in actions_at(layer.index, self.max_layers):
                if alt[1] == LayerType.TERMINAL:
                    continue
                layers = [list(la) for la in body]
                layers[i] = list(alt)
                try:
                    child = Block.parse(layers, max_layers=self.max_layers)
                except BlockError:
                    continue
                if child.key not in seen:
                    seen.add(child.key)
                    out.append(child)
        return out

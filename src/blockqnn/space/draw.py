"""A picture of a block: its DAG laid out in layers from input to output (matplotlib with
networkx, so the install stays one pip command)."""

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


def block_graph(block: Block):
    """The block as a networkx DiGraph with 'input', the layers and 'output' nodes."""
    import networkx as nx

    g = nx.DiGraph()
    g.add_node(0, label="input", colour=COLOURS["input"], level=0)
    level = {0: 0}
    for layer in block.body:
        level[layer.index] = 1 + max(level[p] for p in layer.preds)
        name = {1: "conv", 2: "max pool", 3: "avg pool"}.get(layer.type)
        text = f"{layer.index}: {name} {layer.kernel}x{layer.kernel}" if name else (
            f"{layer.index}: {LayerType(layer.type).name.lower()}"
        )
        g.add_node(layer.index, label=text, colour=COLOURS[LayerType(layer.type)], level=level[layer.index])
        for p in layer.preds:
            g.add_edge(p, layer.index)
    out = block.body[-1].index + 1
    g.add_node(out, label="output (concat)" if len(block.leaves) > 1 else "output",
               colour=COLOURS["output"], level=max(level.values()) + 1)
    for leaf in block.leaves:
        g.add_edge(leaf, out)
    return g


def draw_block(block: Block, path: str | Path, title: str | None = None) -> list[Path]:
    """Draw ``block`` to ``path``; writes both .png and .svg (whatever suffix ``path`` has).
    Returns the files written. Uses matplotlib's object API (no pyplot state), so the W&B
    logger's thread can draw while the search draws its own figures."""
    import matplotlib
    import networkx as nx
    from matplotlib.figure import Figure

    g = block_graph(block)
    pos = nx.multipartite_layout(g, subset_key="level", align="horizontal", scale=1.0)
    # multipartite puts level 0 at the top for align=horizontal only with flipped y.
    pos = {n: (x, -y) for n, (x, y) in pos.items()}
    levels = max(d["level"] for _, d in g.nodes(data=True)) + 1
    widest = max(sum(1 for _, d in g.nodes(data=True) if d["level"] == lv) for lv in range(levels))
    fig = Figure(figsize=(max(4.0, 2.2 * widest), max(3.0, 1.1 * levels)))
    ax = fig.subplots()
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=12, node_size=2200, edge_color="#555")
    for node, data in g.nodes(data=True):
        x, y = pos[node]
        ax.text(x, y, data["label"], ha="center", va="center", fontsize=9,
                bbox=dict(boxstyle="round,pad=0.4", fc=data["colour"], ec="#333"))
    ax.set_title(title or f"block {block.to_json(terminal=False)}", fontsize=8, wrap=True)
    ax.axis("off")
    ax.margins(0.15)
    fig.tight_layout()
    base = Path(path).with_suffix("")
    written = []
    for suffix in (".png", ".svg"):
        out = base.with_suffix(suffix)
        out.parent.mkdir(parents=True, exist_ok=True)
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text
            fig.savefig(out, dpi=120)
        written.append(out)
    return written

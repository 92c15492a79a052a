"""A self-contained HTML report of a search: ``python -m blockqnn.report <run folder> [-o out.html]``.

Figures are embedded as base64 PNG and the block drawings as inline SVG, so the file opens
anywhere without a network."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import sys
import tempfile
from pathlib import Path

from blockqnn import analysis
from blockqnn.errors import BlockQNNError


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _svg(block) -> str:
    from blockqnn.space.draw import draw_block

    with tempfile.TemporaryDirectory() as tmp:
        files = draw_block(block, Path(tmp) / "b.png")
        text = files[1].read_text()
    return text[text.index("<svg"):]


def _row(rank: int, e: dict) -> str:
    acc = "-" if e["accuracy"] is None else f"{e['accuracy']:.4f}"
    mflops = "-" if e["flops"] is None else f"{e['flops'] / 1e6:.2f}"
    nsc = html.escape(json.dumps(json.loads(e["nsc"])[:-1]))
    return (f"<tr><td>{rank}</td><td>{e['id']}</td><td>{e['reward']:.4f}</td><td>{acc}</td><td>{mflops}</td>"
            f"<td>{e['params']}</td><td><code>{nsc}</code></td></tr>")


def render(run_dir: str | Path) -> str:
    from blockqnn.space.nsc import Block

    run = analysis.load_run(run_dir)
    eps = analysis.finished(run)
    top = analysis.top_blocks(run, 5)
    rows = "".join(_row(i, e) for i, e in enumerate(analysis.top_blocks(run, 10), 1))
    drawings = "".join(
        f"<figure><figcaption>#{i}: reward {e['reward']:.4f}</figcaption>{_svg(Block.parse(e['nsc']))}</figure>"
        for i, e in enumerate(top, 1)
    )
    figures = [("Reward per episode", analysis.fig_rewards(run)),
               ("Layer types per epsilon stage", analysis.fig_layer_types(run)),
               ("Accuracy against FLOPs", analysis.fig_accuracy_flops(run)),
               ("Learned Q-values", analysis.fig_q_values(run))]
    imgs = "".join(f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='{_png(f)}'>" for t, f in figures)
    best = f"{max(e['reward'] for e in eps):.4f}" if eps else "-"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BlockQNN search report</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}figure{{display:inline-block;margin:0 1em 1em 0}}
figure svg{{max-width:480px;height:auto}}img{{max-width:100%}}</style></head><body>
<h1>BlockQNN search report</h1>
<p>Run folder: <code>{html.escape(str(run["run_dir"]))}</code> &middot; episodes finished: {len(eps)} of
{len(run["episodes"])} &middot; best reward: {best}</p>
<h2>Top blocks</h2>
<table><tr><th>rank</th><th>episode</th><th>reward</th><th>accuracy</th><th>MFLOPs</th><th>params</th>
<th>block (NSC)</th></tr>{rows}</table>
{imgs}
<h2>The best blocks</h2>{drawings}
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blockqnn.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a search run folder (with search.db)")
    parser.add_argument("-o", "--output", help="the HTML file (default: <run_dir>/report.html)")
    args = parser.parse_args(argv)
    try:
        text = render(args.run_dir)
    except BlockQNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else Path(args.run_dir) / "report.html"
    out.write_text(text)
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

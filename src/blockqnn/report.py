"""Self-contained HTML reports: ``python -m blockqnn.report <run folder> [-o out.html]`` reports
one search; ``python -m blockqnn.report <sweep folder | run folders ...>`` compares several
(grouped by the overrides that differ, seeds pooled; see blockqnn.compare).

Figures are embedded as base64 PNG and the block drawings as inline SVG, so the file opens
anywhere without a network."""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
import sys
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

from blockqnn import analysis, compare
from blockqnn.data.shapes import network_spec
from blockqnn.errors import BlockQNNError
from blockqnn.search.ranking import ranked
from blockqnn.space.draw import draw_network
from blockqnn.space.registry import draw_arch, parse_any

STYLE = """body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px}figure{display:inline-block;margin:0 1em 1em 0}
figure svg{max-width:480px;height:auto}figure.wide svg{max-width:100%}img{max-width:100%}"""


def _png(fig) -> str:
    # lazy: plotting only where a figure is drawn (master start-up)
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _svg(block, draw=draw_arch, *args) -> str:
    """A drawing (``draw(block, *args, path)``: the architecture's own or draw_network) as
    inline SVG."""
    with tempfile.TemporaryDirectory() as tmp:
        files = draw(block, *args, Path(tmp) / "d.png")
        text = files[1].read_text()
    return text[text.index("<svg") :]


def _network_svg(run_dir: Path, block) -> str:
    """The network the best block is stacked into, drawn from the run's composed config
    (.hydra/config.yaml); empty where the run has none or its data's shape is unknown."""
    config = run_dir / ".hydra" / "config.yaml"
    if not config.exists() or not block.has_network:
        return ""
    cfg = OmegaConf.to_container(OmegaConf.load(config), resolve=False)
    try:
        spec = network_spec(
            cfg["network"], cfg["data"], (cfg.get("evaluator") or {}).get("num_classes")
        )
    except (BlockQNNError, KeyError, TypeError, ValueError):
        return ""
    svg = _svg(block, draw_network, spec)
    return f"<h2>The best block's network</h2><figure class='wide'>{svg}</figure>"


def _row(rank: int, e: dict) -> str:
    acc = "-" if e["accuracy"] is None else f"{e['accuracy']:.4f}"
    mflops = "-" if e["flops"] is None else f"{e['flops'] / 1e6:.2f}"
    nsc = html.escape(json.dumps(json.loads(e["nsc"])[:-1]))
    se = f" ± {e['reward_se']:.4f}" if e.get("evaluations", 1) > 1 else ""
    return (
        f"<tr><td>{rank}</td><td>{e['id']}</td><td>{e['reward']:.4f}{se}</td><td>{e.get('evaluations', 1)}</td>"
        f"<td>{e.get('reward_first', e['reward']):.4f}</td><td>{acc}</td><td>{mflops}</td>"
        f"<td>{e['params']}</td><td><code>{nsc}</code></td></tr>"
    )


def render(run_dir: str | Path) -> str:
    run = analysis.load_run(run_dir)
    eps = analysis.finished(run)
    top = analysis.top_blocks(run, 5)
    rows = "".join(_row(i, e) for i, e in enumerate(analysis.top_blocks(run, 10), 1))
    drawings = "".join(
        f"<figure><figcaption>#{i}: reward {e['reward']:.4f}</figcaption>{_svg(parse_any(e['nsc']))}</figure>"
        for i, e in enumerate(top, 1)
    )
    figures = [
        ("Reward per episode", analysis.fig_rewards(run["episodes"])),
        ("Layer types per epsilon stage", analysis.fig_layer_types(run)),
        ("Accuracy against FLOPs", analysis.fig_accuracy_flops(run)),
        ("Learned Q-values", analysis.fig_q_values(run)),
    ]
    imgs = "".join(
        f"<h2>{html.escape(t)}</h2><img alt='{html.escape(t)}' src='{_png(f)}'>" for t, f in figures
    )
    best = f"{top[0]['reward']:.4f} (mean of {top[0]['evaluations']})" if top else "-"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BlockQNN search report</title>
<style>{STYLE}</style></head><body>
<h1>BlockQNN search report</h1>
<p>Run folder: <code>{html.escape(str(run["run_dir"]))}</code> &middot; episodes finished: {len(eps)} of
{len(run["episodes"])} &middot; best block's reward: {best}</p>
<h2>Top blocks</h2>
<p>Ranked by the mean reward over each block's evaluations (its training in the search and its
re-evaluations with fresh seeds, <code>search.reevaluate</code>), with the standard error and the
count; "first" is the reward first observed (optimistic for the top blocks: the winner's curse).</p>
<table><tr><th>rank</th><th>episode</th><th>reward (mean)</th><th>n</th><th>first</th><th>accuracy</th><th>MFLOPs</th>
<th>params</th>
<th>block (NSC)</th></tr>{rows}</table>
{imgs}
<h2>The best blocks</h2>{drawings}
{_network_svg(Path(run["run_dir"]), parse_any(top[0]["nsc"])) if top else ""}
</body></html>
"""


def _num(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _fmt(m: tuple[float, float], digits: int = 4) -> str:
    mean, half = m
    if math.isnan(mean):
        return "-"
    return f"{mean:.{digits}f}" + ("" if math.isnan(half) else f" &plusmn; {half:.{digits}f}")


def _p(g: dict, k: str) -> str:
    if g["reference"]:
        return "reference"
    p = g.get(f"p_{k}")
    return "-" if p is None else f"{p:.3g} ({g['paired_seeds']} pairs)"


def render_comparison(
    run_dirs: list[Path], out: Path, reference: str | None = None, run_reports: bool = True
) -> str:
    """The HTML comparing ``run_dirs``; with ``run_reports`` each run's own report.html is
    written where it is missing, and linked."""

    runs = [compare.load(d) for d in run_dirs]
    groups = compare.group_runs(runs)
    result = compare.compare(groups, reference)
    ref = result["reference"]
    rows, drawings, links = [], [], []
    for name, g in result["groups"].items():
        eps = ", ".join(str(n) for n in sorted(set(g["episodes"])))
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{g['runs']}</td><td>{eps}</td>"
            f"<td>{_fmt(g['best'])}</td><td>{_fmt(g['top10'])}</td>"
            f"<td>{_fmt(g['last_minus_first'])}</td><td>{_fmt(g['trained'], 0)}</td>"
            f"<td>{_p(g, 'best')}</td><td>{_p(g, 'top10')}</td></tr>"
        )
        # Best of the group: each run's own returned block (ranked by its mean), best of those.
        tops = [
            t[0] for r in groups[name] if (t := ranked(r["episodes"], r.get("reevaluations", [])))
        ]
        top = sorted(tops, key=lambda e: -e["reward"])
        if top:
            best = top[0]
            cap = (
                f"{html.escape(name)}: reward {best['reward']:.4f}, accuracy {_num(best['accuracy'])}<br>"
                f"<code>{html.escape(parse_any(best['nsc']).compact())}</code>"
            )
            drawings.append(
                f"<figure><figcaption>{cap}</figcaption>{_svg(parse_any(best['nsc']))}</figure>"
            )
        for r in groups[name]:
            page = r["run_dir"] / "report.html"
            if run_reports and not page.exists():
                page.write_text(render(r["run_dir"]))
            target = os.path.relpath(page, out.parent) if page.exists() else None
            label = html.escape(str(r["run_dir"]))
            best = compare.final(r["curves"], "best_curve")
            best = "-" if math.isnan(best) else f"{best:.4f}"
            link = f"<a href='{html.escape(target)}'>{label}</a>" if target else label
            links.append(
                f"<tr><td>{html.escape(name)}</td><td>{r['seed']}</td><td>{link}</td>"
                f"<td>{r['curves']['episodes']}</td><td>{best}</td></tr>"
            )
    img = _png(compare.fig_curves(groups, result))
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>BlockQNN search comparison</title>
<style>{STYLE}</style></head><body>
<h1>BlockQNN search comparison</h1>
<p>{len(runs)} runs in {len(groups)} groups (grouped by the overrides that differ between them; seeds pooled
within a group). Figures are means over a group's runs with 95% confidence half-widths (Student t);
p-values are two-sided Wilcoxon signed-rank tests against <b>{html.escape(ref)}</b> over the seeds
both groups ran.</p>
<h2>Final figures</h2>
<table><tr><th>group</th><th>runs</th><th>episodes</th><th>best reward</th><th>top-10 mean</th>
<th>last - first stage</th><th>trained</th><th>p best</th><th>p top-10</th></tr>{"".join(rows)}</table>
<h2>Best-so-far, top-10 and stage means</h2><img alt="curves per group" src="{img}">
<h2>The best block of each group</h2>{"".join(drawings)}
<h2>The runs</h2>
<table><tr><th>group</th><th>seed</th><th>run folder (its own report)</th><th>episodes</th><th>best reward</th></tr>
{"".join(links)}</table>
</body></html>
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m blockqnn.report", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "paths",
        nargs="+",
        metavar="folder",
        help="a search run folder (with search.db), a sweep folder, or several run folders",
    )
    parser.add_argument(
        "-o",
        "--output",
        help="the HTML file (default: <run folder>/report.html, or "
        "comparison.html in the sweep folder or the run folders' parent)",
    )
    parser.add_argument(
        "--reference", help="the group the paired tests compare against (default: the first)"
    )
    parser.add_argument(
        "--no-run-reports",
        action="store_true",
        help="do not write the missing report.html of each compared run",
    )
    args = parser.parse_args(argv)
    try:
        run_dirs = compare.find_runs(args.paths)
        single = len(args.paths) == 1 and run_dirs == [Path(args.paths[0])]
        if single:
            out = Path(args.output) if args.output else run_dirs[0] / "report.html"
            text = render(run_dirs[0])
        else:
            base = (
                Path(args.paths[0])
                if len(args.paths) == 1
                else Path(os.path.commonpath([os.path.abspath(p) for p in args.paths]))
            )
            out = Path(args.output) if args.output else base / "comparison.html"
            text = render_comparison(run_dirs, out, args.reference, not args.no_run_reports)
    except BlockQNNError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out.write_text(text)
    print(f"report written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

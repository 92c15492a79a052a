"""The registry of search spaces (``space=`` in the config) and the one place that tells a
stored architecture's space from its form (for readers without the run's config: the report,
the loggers' catch-up, the analysis of old folders)."""

from __future__ import annotations

from typing import Any

from blockqnn.errors import BlockError, ConfigError
from blockqnn.space.base import SearchSpace
from blockqnn.space.draw import draw_block
from blockqnn.space.nb201 import Cell, NB201Space
from blockqnn.space.nsc import Block, NSCSpace

#: Named spaces (``space=<name>``): conf/space/<name>.yaml instantiates them.
SPACES: dict[str, type[SearchSpace]] = {"nsc": NSCSpace, "nb201": NB201Space}


def build_space(node: Any) -> SearchSpace:
    """The space a config's ``space`` section names (``_target_`` and its arguments)."""
    # lazy: Hydra only where a config is read
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if node is None:
        return NSCSpace()
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    node = {k: v for k, v in dict(node).items() if v is not None or k != "max_layers"}
    if "_target_" not in node:  # a folder from before spaces were pluggable: the NSC space
        return NSCSpace(**{k: v for k, v in node.items() if k == "max_layers"})
    try:
        space = instantiate(node)
    except InstantiationException as exc:
        raise ConfigError(
            f"cannot build the space from {node.get('_target_')!r}: {exc.__cause__ or exc}"
        ) from None
    if not isinstance(space, SearchSpace):
        raise ConfigError(
            f"space._target_={node['_target_']!r} is not a search space; spaces: {', '.join(SPACES)}"
        )
    return space


def draw_arch(arch, path, title: str | None = None) -> list:
    """An architecture drawn to ``path`` (.png and .svg): an NSC block's DAG
    (:func:`blockqnn.space.draw.draw_block`), a NAS-Bench-201 cell's edges (:meth:`Cell.draw`)."""
    drawers = {Block: draw_block, Cell: Cell.draw}
    return drawers[type(arch)](arch, path, title=title)


def parse_any(obj: Any):
    """A stored architecture parsed by the space whose form it has (an NSC block: a list of
    layers; a NAS-Bench-201 cell: six ops). For readers without the run's config."""
    for parse in (Block.parse, Cell.parse):
        try:
            return parse(obj)
        except BlockError:
            continue
    raise BlockError(
        f"{str(obj)[:80]!r} is neither an NSC block nor a NAS-Bench-201 cell", None, "format"
    )

"""The block train.py trains: a preset name, a block JSON file (a search's best_block.json works
as is) or an inline NSC list."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from blockqnn.errors import BlockError, ConfigError
from blockqnn.space.nsc import Block
from blockqnn.space.presets import PRESETS, preset


def resolve_block(spec: Any) -> Block:
    """A block from a preset name, a path to a block JSON file (a search's best_block.json
    works as is: its "nsc" entry is used) or an inline NSC list."""
    if isinstance(spec, (ListConfig, DictConfig)):
        spec = OmegaConf.to_container(spec, resolve=True)
    if isinstance(spec, (list, tuple)):
        return Block.parse(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(
            f"block={spec!r}: give a preset ({', '.join(PRESETS)}), a block JSON file or an NSC list"
        )
    text = spec.strip()
    if text.startswith("["):
        return Block.parse(text)
    if text in PRESETS:
        return preset(text)
    path = Path(text).expanduser()
    if path.is_file():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise BlockError(
                f"{path} is not valid JSON ({exc.msg} at char {exc.pos})", None, "json"
            ) from None
        if isinstance(data, dict):
            if "nsc" not in data:
                raise BlockError(f"{path} has no 'nsc' entry", None, "format")
            data = data["nsc"]
        return Block.parse(data)
    if "/" in text or text.endswith(".json"):
        raise ConfigError(f"block={text}: no such file")
    raise ConfigError(
        f"block={text!r} is not a preset, a file or an NSC list; presets: {', '.join(PRESETS)}"
    )

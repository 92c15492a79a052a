"""A run folder keeps the configuration it was started with, so that
``python search.py hydra.run.dir=<folder>`` resumes it as it was.

The store's ``meta`` table holds the command-line overrides of the start that created the
folder and the texts of Hydra's ``.hydra/config.yaml`` and ``overrides.yaml`` of that start.
A later start with the folder merges its own overrides over the stored ones (a key given again
wins: ``search.max_episodes=<more>`` extends a capped search); Hydra has by then rewritten
``.hydra/`` with the later start's overrides, so the stored texts are written back: the folder
always describes the search it holds (the comparison report groups runs by it), and a start
that is refused leaves it exactly as it was."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

HYDRA_FILES = ("config.yaml", "overrides.yaml")


def stored_origin(run_dir: Path) -> dict | None:
    """The folder's stored overrides and Hydra files (None: no store, or one written before
    origins were kept)."""
    db = Path(run_dir) / "search.db"
    if not db.is_file():
        return None
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT value FROM meta WHERE name = 'origin'").fetchone()
        finally:
            con.close()
    except sqlite3.DatabaseError:
        return None  # the store itself reports what is wrong with it
    return json.loads(row[0]) if row else None


def current_origin(run_dir: Path, overrides: list[str]) -> dict:
    """This start's overrides and Hydra files (what a new folder stores)."""
    hydra = Path(run_dir) / ".hydra"
    files = {n: (hydra / n).read_text() for n in HYDRA_FILES if (hydra / n).is_file()}
    return {"overrides": list(overrides), "hydra_files": files}


def _key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def merged(stored: list[str], given: list[str]) -> list[str]:
    """The stored overrides with the given ones over them (same key: the given one)."""
    keys = {_key(o) for o in given}
    return [o for o in stored if _key(o) not in keys] + list(given)


def restore_hydra_files(run_dir: Path, origin: dict | None) -> None:
    """Write the folder's stored Hydra files back over what this start's Hydra wrote."""
    if not origin:
        return
    hydra = Path(run_dir) / ".hydra"
    for name, text in origin.get("hydra_files", {}).items():
        if hydra.is_dir():
            (hydra / name).write_text(text)

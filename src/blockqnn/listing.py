"""The "outputs in <folder>: ..." line of search.py and train.py: what the run folder holds,
listed from the folder itself (so it names exactly the files that exist), the main outputs first."""

from __future__ import annotations

from pathlib import Path

#: Not outputs: Hydra's folder, the lock of a running search, SQLite's transient files.
NOT_OUTPUTS = (".hydra", "search.lock")
TRANSIENT = ("-wal", "-shm", "-journal")


def outputs(folder: str | Path, first: tuple[str, ...] = ()) -> list[str]:
    """The entries of ``folder`` (folders with a trailing /), those named in ``first`` first in
    that order, then the rest alphabetically; hidden entries, logs and the lock left out."""
    folder = Path(folder)
    names = [
        p.name
        for p in folder.iterdir()
        if not p.name.startswith(".")
        and p.name not in NOT_OUTPUTS
        and p.suffix != ".log"
        and not p.name.endswith(TRANSIENT)
    ]
    rank = {name: i for i, name in enumerate(first)}
    names.sort(key=lambda n: (rank.get(n, len(rank)), n))
    return [n + "/" if (folder / n).is_dir() else n for n in names]


def outputs_line(folder: str | Path, first: tuple[str, ...] = ()) -> str:
    return f"outputs in {folder}: {', '.join(outputs(folder, first))}"

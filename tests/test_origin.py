"""A run folder resumes with its own configuration: the printed resume command
(``python search.py hydra.run.dir=<folder>``) works as printed, a key given again wins, and a
refused start leaves the folder (its .hydra files included) as it was."""

import sqlite3
import subprocess

from blockqnn.search.origin import merged
from tests.helpers import search_argv

FIRST = ["debug=smoke", "evaluator=surrogate", "logger=none", "search.max_episodes=4"]


def _run(folder, *extra):
    return subprocess.run(search_argv(folder, *extra), capture_output=True, text=True, timeout=300)


def _episodes(folder) -> int:
    con = sqlite3.connect(folder / "search.db")
    n = con.execute("SELECT count(*) FROM episodes WHERE status != 'running'").fetchone()[0]
    con.close()
    return n


def test_merged_overrides_let_a_key_given_again_win():
    stored = ["debug=smoke", "search.max_episodes=4", "+trainer.x=1", "agent=random"]
    assert merged(stored, ["search.max_episodes=8", "agent=tpe"]) == [
        "debug=smoke",
        "+trainer.x=1",
        "search.max_episodes=8",
        "agent=tpe",
    ]
    assert merged(stored, []) == stored


def test_the_printed_resume_command_resumes_with_the_folders_own_configuration(tmp_path):
    folder = tmp_path / "run"
    first = _run(folder, *FIRST)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "python search.py" in first.stderr  # the resume command it prints (wrapped)
    hydra_files = {p.name: p.read_text() for p in (folder / ".hydra").glob("*.yaml")}
    assert _episodes(folder) == 4
    # The printed command, extended: the folder's overrides, with the cap given again.
    more = _run(folder, "search.max_episodes=8")
    assert more.returncode == 0, more.stderr[-2000:]
    assert "resuming with the folder's own overrides" in more.stderr
    assert _episodes(folder) == 8
    # A start with another config is refused and changes nothing, .hydra included.
    before = (folder / "search.db").read_bytes()
    refused = _run(folder, "recipe.epochs=5")
    assert refused.returncode == 2 and "recipe.epochs: stored 1 vs now 5" in refused.stderr
    assert (folder / "search.db").read_bytes() == before
    for name in ("config.yaml", "overrides.yaml"):
        assert (folder / ".hydra" / name).read_text() == hydra_files[name]

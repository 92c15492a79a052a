"""The search's SQLite store: one row per planned episode, the agent's state beside it.

Writes are grouped: :meth:`SearchStore.begin` and :meth:`SearchStore.finish` write inside an
open transaction, and :meth:`SearchStore.commit` saves the agent's state as of that moment
(what changed since the previous commit) and commits, all in one transaction. The search loop
commits between episodes only, so the saved agent state is always the one that produced the
saved episodes: a search killed at any moment resumes with every committed episode recorded
once and samples the blocks it would have sampled (what was not committed runs again). The
loop commits before any wait that may be long (a training), so only results that came back
within the last moments (instant evaluators) can be lost to a kill.

The database runs in WAL mode with ``synchronous=NORMAL``: a killed process loses nothing
committed; a power loss or an OS crash may lose the last commits, never the database's
consistency.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from blockqnn.errors import BlockQNNError, ConfigError
from blockqnn.result import FIELDS as RESULT_COLUMNS
from blockqnn.result import RETRIED, empty_result, evaluation_seed, is_measured

APP = "blockqnn"
SCHEMA_VERSION = 3
READABLE_VERSIONS = (
    "2",
    "3",
)  # 2 lacks agent_parts (created on open); its full agent state still loads

#: The columns of a result (blockqnn.result.FIELDS) in the episodes and reevaluations tables.
RESULT_SQL = """    status TEXT NOT NULL,
    reward REAL,
    accuracy REAL,
    flops INTEGER,
    params INTEGER,
    density REAL,
    epochs INTEGER,
    restarts INTEGER,
    wall_time REAL,
    error TEXT,
    history TEXT,
    cost REAL,
    widths TEXT,
    train_loss TEXT,
"""

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    id INTEGER PRIMARY KEY,
    iteration INTEGER NOT NULL,
    epsilon REAL NOT NULL,
    nsc TEXT NOT NULL,
    key TEXT NOT NULL,
{RESULT_SQL}    told INTEGER,
    reused INTEGER NOT NULL DEFAULT 0,
    predicted INTEGER NOT NULL DEFAULT 0,
    started_at REAL NOT NULL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS episodes_key ON episodes(key);
CREATE TABLE IF NOT EXISTS agent (id INTEGER PRIMARY KEY CHECK (id = 0), state TEXT NOT NULL, updated_at REAL NOT NULL);
"""
PARTS_TABLE = """CREATE TABLE IF NOT EXISTS agent_parts (
    part TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (part, key)
) WITHOUT ROWID"""

REEVAL_TABLE = f"""CREATE TABLE IF NOT EXISTS reevaluations (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    nsc TEXT NOT NULL,
    repeat INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    after_episode INTEGER NOT NULL,
    round INTEGER NOT NULL,
{RESULT_SQL}    started_at REAL NOT NULL,
    finished_at REAL,
    UNIQUE (key, repeat)
)"""

# What is saved with every episode: a small JSON state, and for each large part (a mapping of
# text keys to JSON values) the entries changed since the previous save.
Checkpoint = tuple[dict[str, Any], dict[str, dict[str, Any]]]


def read_agent_state(db: sqlite3.Connection) -> Checkpoint | None:
    """The saved state and every saved part entry of a store's connection (read-only use too;
    a schema-2 store has no agent_parts table: its agent row holds the whole state)."""
    row = db.execute("SELECT state FROM agent WHERE id = 0").fetchone()
    if row is None:
        return None
    parts: dict[str, dict[str, Any]] = {}
    if db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'agent_parts'"
    ).fetchone():
        for part, key, value in db.execute("SELECT part, key, value FROM agent_parts"):
            parts.setdefault(part, {})[key] = json.loads(value)
    return json.loads(row[0]), parts


def read_run(run_dir: Path, agent: bool = True) -> dict[str, Any]:
    """A run folder's search.db, read-only: its episodes (id order), its meta entries, and with
    ``agent`` its saved agent state and parts (None when never saved). ConfigError when the
    folder holds no readable search.db."""

    db = Path(run_dir) / "search.db"
    if not db.is_file():
        raise ConfigError(f"{run_dir} has no search.db: not a search run folder")
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    con.row_factory = sqlite3.Row
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        reevals = (
            [dict(r) for r in con.execute("SELECT * FROM reevaluations ORDER BY id")]
            if "reevaluations" in tables
            else []
        )
        return {
            "episodes": [dict(r) for r in con.execute("SELECT * FROM episodes ORDER BY id")],
            "reevaluations": reevals,
            "meta": dict(tuple(r) for r in con.execute("SELECT name, value FROM meta")),
            "agent": read_agent_state(con) if agent else None,
        }
    except sqlite3.DatabaseError as exc:
        raise ConfigError(f"{db} cannot be read: {exc}") from None
    finally:
        con.close()


def parts_of(parts: dict[str, dict[str, Any]], owner: str) -> dict[str, dict[str, Any]]:
    """The parts saved under ``owner.`` (e.g. the agent's), with that prefix removed."""
    return {k.removeprefix(owner + "."): v for k, v in parts.items() if k.startswith(owner + ".")}


# Stored as JSON text: the validation accuracy and the mean training loss of each epoch, the stage
# widths a budget chose.
JSON_COLUMNS = ("history", "widths", "train_loss")


def _json(value: Any) -> str:
    """JSON text of a saved part entry; a finite float (a Q value) is its repr, as json writes it."""
    if type(value) is float and value == value and abs(value) != float("inf"):
        return repr(value)
    return json.dumps(value)


def _row_values(result: dict) -> list:
    """A result's values in RESULT_COLUMNS order, JSON columns as text (what the stores write)."""
    return [
        json.dumps(result.get(c))
        if c in JSON_COLUMNS and result.get(c) is not None
        else result.get(c)
        for c in RESULT_COLUMNS
    ]


def _result(row: sqlite3.Row) -> dict[str, Any]:
    return {
        c: json.loads(row[c]) if c in JSON_COLUMNS and row[c] is not None else row[c]
        for c in RESULT_COLUMNS
    }


def _listed(row: sqlite3.Row) -> dict[str, Any]:
    """A stored row as a dict, its stage widths (JSON text in the table) as a list."""
    out = dict(row)
    if out.get("widths") is not None:
        out["widths"] = json.loads(out["widths"])
    return out


def evaluation_stats(rows: list[dict]) -> dict | None:
    """Mean reward and accuracy of a block's measured evaluations, the standard error of the
    mean reward (sd / sqrt(n), 0 for one evaluation) and their count n."""
    if not rows:
        return None
    rewards = [float(r["reward"]) for r in rows]
    accs = [float(r["accuracy"]) for r in rows if r.get("accuracy") is not None]
    n = len(rewards)
    mean = sum(rewards) / n
    se = (sum((x - mean) ** 2 for x in rewards) / (n - 1) / n) ** 0.5 if n > 1 else 0.0
    return {
        "reward": mean,
        "reward_se": se,
        "evaluations": n,
        "accuracy": sum(accs) / len(accs) if accs else None,
    }


#: Keys that say where things are, not what they are: left out of the fingerprint (and out
#: of the stored one when a folder is resumed), so a moved data folder or table still resumes.
UNFINGERPRINTED = (
    ("data", "root"),
    ("data", "download"),
    ("data", "cache_dir"),
    ("evaluator", "table"),
)


#: Keys added to a fingerprinted section after folders were written without them, with the
#: value that reproduces what those folders did: a stored fingerprint that lacks one is read
#: as holding it, so an upgrade does not refuse a folder whose search the key cannot have
#: changed (and a folder that now sets another value is still refused).
ADDED_KEYS = {
    ("network", "drop_path"): 0.0,
    ("network", "channels_last"): False,
    ("network", "params"): None,
    ("network", "flops"): None,
    ("network", "max_width"): 256,
    ("network", "budget_tolerance"): 0.03,
    ("network", "parameter_free"): "allow",
    ("reward", "signal"): "accuracy",
}


def with_added_keys(fp: dict) -> dict:
    """A stored fingerprint with the :data:`ADDED_KEYS` it lacks, at their neutral values."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in fp.items()}
    for (section, key), value in ADDED_KEYS.items():
        if isinstance(out.get(section), dict):
            out[section].setdefault(key, value)
    return out


def without_locations(fp: dict) -> dict:
    """A fingerprint without the UNFINGERPRINTED keys (stored fingerprints of earlier versions
    hold them)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in fp.items()}
    for section, key in UNFINGERPRINTED:
        if isinstance(out.get(section), dict):
            out[section].pop(key, None)
    return out


def _differences(section: str, old: Any, new: Any) -> str:
    """The keys of a fingerprint section that differ, named in full (``trainer.precision: stored
    32 vs now 16``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        return "; ".join(_differences(f"{section}.{k}", old.get(k), new.get(k)) for k in keys)
    return f"{section}: stored {json.dumps(old)} vs now {json.dumps(new)}"


class StoreError(BlockQNNError):
    """The run folder's database cannot be used (corrupt, foreign or incompatible)."""


class SearchStore:
    def __init__(self, path: Path, fingerprint: dict[str, Any]):
        self.path = Path(path)
        # Statuses tried again up to search.max_attempts before they are reused: a timeout,
        # and an oom where the device may be shared (the search sets it: setup.device_shared).
        self.limited: tuple[str, ...] = ("timeout",)
        existed = self.path.exists()
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            if existed:
                self._check(fingerprint)
                if (
                    "agent_parts" not in self._tables()
                ):  # schema 2: add the table, nothing else changes
                    with self.transaction() as db:
                        db.execute(PARTS_TABLE)
                        db.execute(
                            "UPDATE meta SET value = ? WHERE name = 'schema_version'",
                            (str(SCHEMA_VERSION),),
                        )
                if "reevaluations" not in self._tables():  # folders from before re-evaluation
                    with self.transaction() as db:
                        db.execute(REEVAL_TABLE)
                columns = {r[1] for r in self.db.execute("PRAGMA table_info(episodes)")}
                if "history" not in columns:  # folders from before per-epoch histories were kept
                    with self.transaction() as db:
                        db.execute("ALTER TABLE episodes ADD COLUMN history TEXT")
                if "told" not in columns:  # folders from before predicted rewards were refreshed
                    with self.transaction() as db:
                        db.execute("ALTER TABLE episodes ADD COLUMN told INTEGER")
                for table in ("episodes", "reevaluations"):  # from before results had these
                    have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                    for column, kind in (
                        ("cost", "REAL"),
                        ("widths", "TEXT"),
                        ("train_loss", "TEXT"),
                    ):
                        if column not in have:
                            with self.transaction() as db:
                                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            else:
                self.db.executescript(SCHEMA + PARTS_TABLE + ";" + REEVAL_TABLE + ";")
                with self.transaction():
                    self.db.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [
                            ("app", APP),
                            ("schema_version", str(SCHEMA_VERSION)),
                            ("fingerprint", json.dumps(fingerprint, sort_keys=True)),
                            ("created_at", str(time.time())),
                        ],
                    )
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a usable search database ({exc}); it was left untouched"
            ) from None

    def _tables(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}

    def _check(self, fingerprint: dict[str, Any]) -> None:
        tables = self._tables()
        if not {"meta", "episodes", "agent"} <= tables:
            raise StoreError(
                f"{self.path} is not a blockqnn search database (tables {sorted(tables)}); "
                "it was left untouched: choose another hydra.run.dir"
            )
        meta = dict(self.db.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("app") != APP or meta.get("schema_version") not in READABLE_VERSIONS:
            raise StoreError(
                f"{self.path} was written by {meta.get('app')!r} schema "
                f"{meta.get('schema_version')!r}; it was left untouched"
            )
        old = with_added_keys(without_locations(json.loads(meta["fingerprint"])))
        # Sections a fingerprint of an earlier version did not hold are not compared: those
        # folders keep resuming (what they did not record cannot be checked).
        now = {k: v for k, v in fingerprint.items() if k in old}
        if old != now:
            diff = sorted(k for k in set(old) | set(now) if old.get(k) != now.get(k))
            details = "; ".join(_differences(k, old.get(k), now.get(k)) for k in diff)
            raise StoreError(
                f"{self.path} belongs to a search with another config ({details}); "
                "it was left untouched: rerun with the same config or another hydra.run.dir"
            )

    # ------------------------------------------------------------------ transactions
    class _Tx:
        def __init__(self, db):
            self.db = db

        def __enter__(self):
            self.db.execute("BEGIN IMMEDIATE")
            return self.db

        def __exit__(self, exc_type, *_):
            self.db.execute("ROLLBACK" if exc_type else "COMMIT")

    def transaction(self):
        return self._Tx(self.db)

    @property
    def uncommitted(self) -> bool:
        """Whether writes wait for :meth:`commit`."""
        return self.db.in_transaction

    def _open(self) -> sqlite3.Connection:
        if not self.db.in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def commit(self, checkpoint: Checkpoint) -> None:
        """Save the agent's state (``checkpoint``: as of now, after every episode written since
        the last commit) and commit it with those episodes."""
        db = self._open()
        self._save_agent(db, checkpoint)
        db.execute("COMMIT")

    def rollback(self) -> None:
        """Drop what was written since the last commit (the agent in memory may be ahead of it)."""
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")

    # ------------------------------------------------------------------ episodes
    def begin(
        self,
        episode: int,
        iteration: int,
        epsilon: float,
        nsc: str,
        key: str,
        prediction: dict | None = None,
    ) -> None:
        """Record a sampled block (status running; saved at the next commit). A block the
        predictor decided not to train carries its predicted result already (predicted = 1),
        so a resumed search keeps that decision."""
        db = self._open()
        db.execute(
            "INSERT INTO episodes (id, iteration, epsilon, nsc, key, status, started_at) "
            "VALUES (?, ?, ?, ?, ?, 'running', ?)",
            (episode, iteration, epsilon, nsc, key, time.time()),
        )
        if prediction is not None:
            db.execute(
                "UPDATE episodes SET reward = ?, density = ?, error = ?, predicted = 1 WHERE id = ?",
                (prediction["reward"], prediction["density"], prediction["error"], episode),
            )

    def finish(
        self,
        episode: int,
        result: dict,
        reused: bool = False,
        predicted: bool = False,
        told: int | None = None,
    ) -> None:
        """Record an episode's result (saved at the next commit); ``told``: its index in the
        agent's memory of results (None: not taught)."""
        db = self._open()
        values = _row_values(result)
        db.execute(
            f"UPDATE episodes SET {', '.join(c + ' = ?' for c in RESULT_COLUMNS)}, reused = ?, "
            "predicted = ?, told = ?, finished_at = ? WHERE id = ? AND status = 'running'",
            (*values, int(reused), int(predicted), told, time.time(), episode),
        )

    def _save_agent(self, db, checkpoint: Checkpoint) -> None:
        state, parts = checkpoint
        db.execute(
            "INSERT INTO agent (id, state, updated_at) VALUES (0, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, updated_at = excluded.updated_at",
            (json.dumps(state), time.time()),
        )
        db.executemany(
            "INSERT INTO agent_parts (part, key, value) VALUES (?, ?, ?) "
            "ON CONFLICT(part, key) DO UPDATE SET value = excluded.value",
            [(part, k, _json(v)) for part, entries in parts.items() for k, v in entries.items()],
        )

    def agent_state(self) -> Checkpoint | None:
        """The saved small state and every saved entry of the large parts, or None."""
        return read_agent_state(self.db)

    def prediction(self, episode: int) -> dict | None:
        row = self.db.execute(
            "SELECT * FROM episodes WHERE id = ? AND predicted = 1", (episode,)
        ).fetchone()
        if row is None:
            return None
        return empty_result("ok", row["error"], reward=row["reward"], density=row["density"])

    def running(self) -> list[sqlite3.Row]:
        return self.db.execute(
            "SELECT * FROM episodes WHERE status = 'running' ORDER BY id"
        ).fetchall()

    def next_episode(self) -> int:
        row = self.db.execute("SELECT MAX(id) FROM episodes").fetchone()
        return 0 if row[0] is None else row[0] + 1

    def lookup(self, key: str, max_attempts: int = 1) -> dict | None:
        """The result to reuse for a block with this canonical key, or None to train it: its
        first trained result, except that ``failed`` results are never reused (the block is
        trained again) and a timeout (an ``oom`` too where the device may be shared:
        ``limited``) is reused only once the block ended so in ``max_attempts`` evaluations."""
        retried = ", ".join(f"'{s}'" for s in RETRIED + self.limited)
        row = self.db.execute(
            f"SELECT * FROM episodes WHERE key = ? AND status NOT IN ('running', {retried}) "
            "AND predicted = 0 ORDER BY id LIMIT 1",
            (key,),
        ).fetchone()
        if row:
            result = _result(row)
            stats = self.key_stats(key)
            if (
                stats is not None and stats["evaluations"] > 1
            ):  # re-evaluated: the mean is the block's result
                result.update(reward=stats["reward"], accuracy=stats["accuracy"])
            return result
        timeouts = self._timeouts(key)
        return _result(timeouts[-1]) if len(timeouts) >= max_attempts else None

    def _timeouts(self, key: str) -> list[sqlite3.Row]:
        """The trained (not reused) evaluations of this block that ended in a ``limited``
        status (timed out; ran out of a shared device's memory), in order."""
        marks = ", ".join("?" for _ in self.limited)
        return self.db.execute(
            f"SELECT * FROM episodes WHERE key = ? AND status IN ({marks}) AND reused = 0 "
            "ORDER BY id",
            (key, *self.limited),
        ).fetchall()

    def predicted_told(self) -> dict[int, tuple[int, list]]:
        """episode -> (its index in the agent's memory, nsc) of every predicted episode taught."""
        rows = self.db.execute(
            "SELECT id, told, nsc FROM episodes WHERE predicted = 1 AND told IS NOT NULL "
            "AND status != 'running'"
        ).fetchall()
        return {r[0]: (r[1], json.loads(r[2])) for r in rows}

    def timeouts(self, key: str) -> int:
        """How many times the block with this key was trained and timed out."""
        return len(self._timeouts(key))

    def measured(self) -> list[tuple[int, list, float]]:
        """(id, nsc, reward) of every block trained in this search and measured (not reused, not
        predicted, neither failed nor timed out: :func:`blockqnn.result.is_measured`)."""
        rows = self.db.execute("SELECT * FROM episodes WHERE reused = 0 ORDER BY id").fetchall()
        return [(r["id"], json.loads(r["nsc"]), r["reward"]) for r in rows if is_measured(dict(r))]

    # ------------------------------------------------------------------ re-evaluations
    def begin_reevaluation(
        self, key: str, nsc: str, repeat: int, seed: int, after_episode: int, round_: int
    ) -> int:
        """Record a re-evaluation of a block (status running; saved at the next commit):
        ``after_episode`` episodes were sampled before it, in the ``round_``-th round there."""
        db = self._open()
        cur = db.execute(
            "INSERT INTO reevaluations (key, nsc, repeat, seed, after_episode, round, status, "
            "started_at) VALUES (?, ?, ?, ?, ?, ?, 'running', ?)",
            (key, nsc, repeat, seed, after_episode, round_, time.time()),
        )
        return int(cur.lastrowid)

    def keep_origin(self, origin: dict) -> None:
        """Store the folder's origin (search/origin.py) unless it holds one: the first start's."""
        with self.transaction() as db:
            db.execute("INSERT OR IGNORE INTO meta VALUES ('origin', ?)", (json.dumps(origin),))

    def begin_retrain(self, key: str, nsc: str, episode: int, run_seed: int) -> tuple[int, int]:
        """A fresh evaluation of a known block for ``episode`` (an agent that never reuses a
        result, e.g. evolution's child): a re-evaluation row with ``round = -1`` and
        ``after_episode = episode``, saved with the episode at the next commit. A resumed search
        finds the row the episode had (same repeat, same seed). Returns (row id, repeat)."""
        row = self.db.execute(
            "SELECT id, repeat FROM reevaluations WHERE key = ? AND round = -1 AND after_episode = ?",
            (key, episode),
        ).fetchone()
        if row is not None:
            return int(row[0]), int(row[1])
        repeat = self.attempts(key) + 1
        seed = evaluation_seed(run_seed, repeat)
        return self.begin_reevaluation(key, nsc, repeat, seed, episode, -1), repeat

    def retrained_episodes(self) -> set[int]:
        """Episodes whose result is a fresh draw of a known block (:meth:`begin_retrain`)."""
        rows = self.db.execute("SELECT after_episode FROM reevaluations WHERE round = -1")
        return {int(r[0]) for r in rows}

    def rounds(self, after_episode: int) -> int:
        """Re-evaluation rounds begun after ``after_episode`` episodes."""
        row = self.db.execute(
            "SELECT MAX(round) FROM reevaluations WHERE after_episode = ? AND round >= 0",
            (after_episode,),
        ).fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def finish_reevaluation(self, rid: int, result: dict) -> None:
        db = self._open()
        values = _row_values(result)
        db.execute(
            f"UPDATE reevaluations SET {', '.join(c + ' = ?' for c in RESULT_COLUMNS)}, finished_at = ? "
            "WHERE id = ? AND status = 'running'",
            (*values, time.time(), rid),
        )

    def reevaluations(self) -> list[dict]:
        return [_listed(r) for r in self.db.execute("SELECT * FROM reevaluations ORDER BY id")]

    def told_indices(self, key: str) -> list[int]:
        """The agent-memory indices of the block's taught, measured episodes (reused included)."""
        rows = self.db.execute(
            "SELECT * FROM episodes WHERE key = ? AND told IS NOT NULL", (key,)
        ).fetchall()
        return [r["told"] for r in rows if is_measured(dict(r))]

    def attempts(self, key: str) -> int:
        """Re-evaluations of the block with this key, finished or running, whatever their status."""
        return self.db.execute(
            "SELECT COUNT(*) FROM reevaluations WHERE key = ?", (key,)
        ).fetchone()[0]

    def measured_attempts(self, key: str) -> int:
        """Re-evaluations of the block with this key whose result was measured."""
        rows = self.db.execute(
            "SELECT * FROM reevaluations WHERE key = ? AND status != 'running'", (key,)
        ).fetchall()
        return sum(1 for r in rows if is_measured(dict(r)))

    def key_stats(self, key: str) -> dict | None:
        """The block's measured evaluations (its first trained episode and its re-evaluations):
        mean reward and accuracy, standard error, count; None when none is measured."""
        first = [
            dict(r)
            for r in self.db.execute(
                "SELECT * FROM episodes WHERE key = ? AND reused = 0 ORDER BY id", (key,)
            )
        ]
        rows = [r for r in first if is_measured(r)][:1] + [
            dict(r)
            for r in self.db.execute(
                "SELECT * FROM reevaluations WHERE key = ? ORDER BY id", (key,)
            )
        ]
        return evaluation_stats([r for r in rows if is_measured(r)])

    def episodes(self) -> list[dict]:
        """Every episode, in order; ``retrained``: its result is a fresh draw of a known block
        (:meth:`begin_retrain`), not a reused one."""
        fresh = self.retrained_episodes()
        return [
            {**_listed(r), "retrained": r["id"] in fresh}
            for r in self.db.execute("SELECT * FROM episodes ORDER BY id")
        ]

    def close(self) -> None:
        """Close; anything not committed is dropped."""
        self.rollback()
        self.db.close()

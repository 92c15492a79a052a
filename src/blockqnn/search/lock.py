"""One master per run folder: an exclusive lock on ``<run folder>/search.lock``.

The lock is an OS file lock (``fcntl.flock``), held for as long as the search runs and
released by the kernel when its process ends, however it ends (SIGKILL, the OOM killer): a
folder left by a dead master never blocks its resume. The file holds the owner's host, pid
and start time, so a second search on a live folder is refused with one line naming them.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from blockqnn.errors import BlockQNNError

LOCK_NAME = "search.lock"


class FolderInUse(BlockQNNError):
    """Another live search holds this run folder."""


class LocksUnsupported(BlockQNNError):
    """The run folder's filesystem refuses file locks (some network filesystems)."""


#: Set to 1 to run without the folder lock where the filesystem has none (README "One search
#: per folder"): nothing then keeps a second search off the folder.
NO_LOCK_ENV = "BLOCKQNN_NO_LOCK"


class RunLock:
    """``with RunLock(run_dir):`` holds the folder's lock, or raises FolderInUse at once."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.file = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(
            self.path, "a+"
        )  # never truncated before the lock is ours: the owner's line stays readable
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                f.close()
                if os.environ.get(NO_LOCK_ENV) == "1":
                    return self  # the user's choice: no lock on this filesystem
                raise LocksUnsupported(
                    f"cannot lock {self.path}: {exc.strerror or exc} (the filesystem does not "
                    "support file locks, as some network filesystems do not). Run folders belong "
                    "on a local disk (SQLite's WAL journal needs one too); to run here anyway, "
                    f"without the one-search-per-folder guard, set {NO_LOCK_ENV}=1"
                ) from None
            f.seek(0)
            text = f.read().strip()
            f.close()
            try:
                owner = json.loads(text)
                who = f"process {owner['pid']} on host {owner['host']} (started {owner['started']})"
            except (ValueError, KeyError, TypeError):
                who = "another process"
            raise FolderInUse(
                f"{self.path.parent} is in use by a running search: {who}. One search per run "
                "folder: wait for it to end (or stop it), or choose another hydra.run.dir"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(
            json.dumps(
                {
                    "host": socket.gethostname(),
                    "pid": os.getpid(),
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            )
            + "\n"
        )
        f.flush()
        self.file = f
        return self

    def __exit__(self, *exc) -> None:
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()  # no owner named once it is gone (a new owner rewrites it)
            self.file.flush()
            self.file.close()  # closing releases the lock; the file stays
            self.file = None

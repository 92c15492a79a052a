"""Decoded image folders shared between processes (``data.cache_dir``): the pool's workers, Ray's
workers on one machine and later runs read one decoded copy instead of each decoding every file.

The first process to need a folder decodes it under a file lock and writes it atomically; the
others wait on the lock, then map the file (``torch.load(mmap=True)``: the operating system
shares its pages between the processes). The file's name is a digest of everything the
decoded tensors depend on: the folder's path, every file's relative path, size and
modification time, the image size, ``skip_unreadable`` and the label map; so a changed folder
is decoded again, never served stale."""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from blockqnn.data.tensors import TensorSplit

log = logging.getLogger("blockqnn.data")


def folder_digest(folder: Path, **settings) -> str:
    """A digest of ``folder``'s files (relative path, size, modification time) and ``settings``."""
    h = hashlib.sha256(json.dumps([str(folder.resolve()), settings], sort_keys=True).encode())
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            h.update(f"{os.path.relpath(path, folder)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:32]


def cached_split(
    cache_dir: str | None, folder: Path, decode: Callable[[], TensorSplit], **settings
) -> TensorSplit:
    """``decode()``'s split of ``folder``, decoded once per content and ``settings`` under
    ``cache_dir`` (None: decoded here, not cached). A cache folder that cannot be written is
    said once on the log and the folder decoded here."""
    if cache_dir is None:
        return decode()
    where = Path(str(cache_dir)).expanduser()
    try:
        where.mkdir(parents=True, exist_ok=True)
        key = folder_digest(folder, **settings)
        lock = open(where / f"{key}.lock", "a+")  # noqa: SIM115  (held across the decode)
    except OSError as exc:
        log.warning(
            "data.cache_dir=%s cannot be used (%s): decoding %s here", cache_dir, exc, folder
        )
        return decode()
    path = where / f"{key}.pt"
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process decodes; the others wait, then read its file
        if not path.exists():
            split = decode()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            torch.save({"images": split.images, "labels": split.labels}, tmp)
            os.replace(tmp, path)
            log.info("decoded %s into the cache %s", folder, path)
            return split
    data = torch.load(path, mmap=True, weights_only=True)
    return TensorSplit(data["images"], data["labels"])

"""Read a W&B run file (``run-<id>.wandb``) back: the history rows it durably holds.

W&B (0.31) no longer ships a Python reader for its transaction log. The file is a LevelDB-style
log (a 7-byte file header ``:W&B``, magic 0xBEE1, version 0; then 32 KiB blocks of records, each
with a 7-byte header: CRC-32, length, type FULL/FIRST/MIDDLE/LAST) of protobuf ``Record``
messages, W&B's own format, decoded here with W&B's protobuf classes. Used by the W&B logger to
know which episodes a killed search's run files hold (so a resume logs the others once) and by
the tests that read the run files back. A torn tail (the process was killed mid-write) ends the
scan: what precedes it is what W&B will sync.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> Iterator[bytes]:
    """The complete records of a W&B run file, in order (a torn or corrupt tail ends them)."""
    data = Path(path).read_bytes()
    if len(data) < HEADER or data[:4] != b":W&B":
        return
    pos, parts = HEADER, []
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # the block's padding
            pos += left
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        body = data[pos + HEADER : pos + HEADER + length]
        if kind == 0 and length == 0:  # zero padding to the block's end
            pos += left
            continue
        if len(body) < length or zlib.crc32(bytes([kind]) + body) & 0xFFFFFFFF != crc:
            return
        pos += HEADER + length
        if kind == FULL:
            yield body
        elif kind == FIRST:
            parts = [body]
        elif kind == MIDDLE:
            parts.append(body)
        elif kind == LAST:
            parts.append(body)
            yield b"".join(parts)
            parts = []
        else:
            return


def parsed_records(path: str | Path) -> list:
    """The run file's complete records as W&B's protobuf ``Record`` messages."""
    # lazy: wandb takes a second to import; only logger=wandb needs it
    from wandb.proto import wandb_internal_pb2 as pb

    out = []
    for raw in records(path):
        rec = pb.Record()
        try:
            rec.ParseFromString(raw)
        except Exception:  # noqa: BLE001 - not a record of this version: stop
            break
        out.append(rec)
    return out


def history_rows(path: str | Path) -> list[dict]:
    """The history rows (``run.log`` calls: key -> value, ``_step`` included) of a run file."""
    rows = []
    for rec in parsed_records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in rec.history.item:
            key = item.key or "/".join(item.nested_key)
            try:
                row[key] = json.loads(item.value_json)
            except ValueError:
                row[key] = item.value_json
        rows.append(row)
    return rows


def run_contents(path: str | Path) -> dict:
    """What a run file holds, for checking a report against it: ``history`` (keys logged per
    step, media keys included), ``summary`` (the final summary's keys and values), ``config``
    (the run's config, nested keys joined with dots), ``group`` and ``job_type``."""
    history: set[str] = set()
    summary: dict = {}
    config: dict = {}
    group = job_type = None
    for rec in parsed_records(path):
        kind = rec.WhichOneof("record_type")
        if kind == "history":
            for item in rec.history.item:
                history.add(item.key or "/".join(item.nested_key))
        elif kind == "summary":
            for item in rec.summary.update:
                key = item.key or "/".join(item.nested_key)
                try:
                    summary[key] = json.loads(item.value_json)
                except ValueError:
                    summary[key] = item.value_json
        elif kind == "run":
            group, job_type = rec.run.run_group or None, rec.run.job_type or None
            for item in rec.run.config.update:
                config[item.key] = json.loads(item.value_json)
        elif kind == "config":
            for item in rec.config.update:
                config[item.key] = json.loads(item.value_json)
    flat: dict = {}

    def walk(prefix: str, value) -> None:
        if (
            isinstance(value, dict)
            and "value" in value
            and len(value) <= 2
            and prefix.count(".") == 0
            and set(value) <= {"value", "desc"}
        ):
            value = value["value"]  # W&B's stored form of a top-level config key
        if isinstance(value, dict):
            for k, v in value.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = value

    for k, v in config.items():
        if not k.startswith("_"):
            walk(k, v)
    media = {k.split("/")[0] for k in history if "/" in k}
    return {
        "history": history | media,
        "summary": summary,
        "config": flat,
        "group": group,
        "job_type": job_type,
    }

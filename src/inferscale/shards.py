"""Shards of a stage's questions: which shard does which question, where a shard writes, and the
merge that folds shards' records into the stage's own stores.

A shard writes its records into stores of its own (`shards/<k>/<store>.jsonl` under the stage's
folder): a result store has one writer. A shard counts the stage's merged stores as done, so a
shard run again (its worker died) resumes from what it and every earlier run wrote. The merge
rewrites each stage store in question order, so the stores of a sharded run are the ones a
local run writes, whatever the shard count; a run that stopped before merging leaves shard
folders that the next run folds in first, whatever its own shard count.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

from inferscale.results import ResultStore

SHARDS_DIR = "shards"
ATTEMPTS_FILE = "attempts.jsonl"  # a shard's attempts, in its folder while it runs
HISTORY_FILE = "shard_attempts.jsonl"  # every shard attempt of the stage, once merged


def assign(ids: list[str], shards: int) -> list[list[str]]:
    """The questions of each shard, dealt in turn (so that the tree searches' questions, the
    first ones, and the levels spread evenly); no empty shard."""
    return [ids[k::shards] for k in range(min(shards, len(ids)))]


def shard_dir(stage_dir: Path, shard: int) -> Path:
    return stage_dir / SHARDS_DIR / str(shard)


def shard_store(stage_dir: Path, shard: int, store_file: str) -> ResultStore:
    """Shard `shard`'s store of `store_file`, reading the stage's merged store as its base."""
    return ResultStore(shard_dir(stage_dir, shard) / store_file, base=stage_dir / store_file)


def record_attempt(stage_dir: Path, shard: int, event: str, **fields) -> int:
    """Append an event of the shard's current attempt to its log; return the attempt's number
    (1 for the first; a `started` event opens the next)."""
    path = shard_dir(stage_dir, shard) / ATTEMPTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    attempt = sum(1 for e in read_attempts(path) if e["event"] == "started")
    if event == "started":
        attempt += 1
    line = {
        "shard": shard,
        "attempt": attempt,
        "event": event,
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "time": time.time(),
        **fields,
    }
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return attempt


def read_attempts(path: Path) -> list[dict]:
    """The events of an attempts log (a shard's or the stage's history); a cut last line is
    skipped."""
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            events.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return events


def written_ids(stage_dir: Path, store_file: str) -> set[str]:
    """The questions a store holds, merged or still in a shard's folder."""
    merged = stage_dir / store_file
    ids = ResultStore(merged).done_ids() if merged.is_file() else set()
    root = stage_dir / SHARDS_DIR
    if root.is_dir():
        for folder in root.iterdir():
            if (folder / store_file).is_file():
                ids |= ResultStore(folder / store_file).done_ids()
    return ids


def merge_shards(stage_dir: Path, order: list[str]) -> dict[str, int]:
    """Fold every shard folder's records into the stage's stores, each rewritten in question
    `order` (ids not in it keep their place after), and their attempt logs into the stage's
    history; then remove the shard folders. Returns the records each store gained."""
    root = stage_dir / SHARDS_DIR
    if not root.is_dir():
        return {}
    folders = sorted((d for d in root.iterdir() if d.is_dir()), key=lambda d: d.name)
    names = sorted({f.name for d in folders for f in d.glob("*.jsonl") if f.name != ATTEMPTS_FILE})
    position = {qid: i for i, qid in enumerate(order)}
    gained = {}
    for name in names:
        stage = ResultStore(stage_dir / name)
        records = stage.read()
        before = len(records)
        held = {r["id"] for r in records}
        for folder in folders:
            for r in ResultStore(folder / name).read():
                if r["id"] not in held:
                    held.add(r["id"])
                    records.append(r)
        gained[name] = len(records) - before
        indexed = sorted(
            enumerate(records), key=lambda ir: (position.get(ir[1]["id"], len(order)), ir[0])
        )
        stage.replace([r for _, r in indexed])
    history = stage_dir / HISTORY_FILE
    logged = {json.dumps(e, sort_keys=True) for e in read_attempts(history)}
    lines = [
        e
        for d in folders
        for e in read_attempts(d / ATTEMPTS_FILE)
        if json.dumps(e, sort_keys=True) not in logged  # a merge cut short before the removal
    ]
    if lines:
        with history.open("a", encoding="utf-8") as f:
            f.write("".join(json.dumps(e) + "\n" for e in lines))
            f.flush()
            os.fsync(f.fileno())
    # Only now: a merge cut short is done again from the same shard files (records count once).
    shutil.rmtree(root)
    return gained

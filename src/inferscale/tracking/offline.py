"""Read offline W&B runs back from their files, with no server and no `wandb sync`.

The `.wandb` transaction log is the only complete record of an offline run: wandb 0.31 writes
no wandb-summary.json or config.yaml under files/ in offline mode (files/ holds only media).
wandb 0.31 also no longer ships a Python reader for the log (`wandb.sdk.internal.datastore` is
gone; reading moved into the Go wandb-core), so the log's framing is decoded here and each record
is parsed with wandb's own protobuf schema.
"""

from __future__ import annotations

import json
import struct
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

# The log is a LevelDB-style log (32 KiB blocks of checksummed chunks; a record too big for the
# rest of a block is split into FIRST/MIDDLE/LAST chunks), after a 7-byte file header that
# counts toward the first block. Checksums are plain CRC-32 of the chunk type byte and data.
_FILE_HEADER = struct.Struct("<4sHB")
_FILE_HEADER_VALUES = (b":W&B", 0xBEE1, 0)
_CHUNK_HEADER = struct.Struct("<IHB")
_BLOCK_SIZE = 32 * 1024
_FULL, _FIRST, _LAST = 1, 2, 4


@dataclass(frozen=True)
class OfflineRun:
    run_dir: Path
    run_id: str
    project: str
    group: str
    job_type: str
    name: str
    config: dict[str, Any]
    history: list[dict[str, Any]]  # one dict per logged step, with _step, _runtime, _timestamp
    summary: dict[str, Any]
    files: list[str]  # logged media and saved files, relative to run_dir / "files"
    artifacts: list[str]  # names of logged artifacts (tables are logged as artifacts too)
    step_metrics: dict[str, str]  # metric -> the metric it is plotted against (define_metric)
    exit_code: int | None  # None when the run never finished (killed, or still running)


def find_runs(wandb_dir: Path) -> list[Path]:
    """The offline-run-* directories in `wandb_dir` or in `wandb_dir / "wandb"`, oldest first."""
    run_dirs = [*wandb_dir.glob("offline-run-*"), *wandb_dir.glob("wandb/offline-run-*")]
    return sorted(run_dirs, key=lambda run_dir: run_dir.name)


def read_run(run_dir: Path, wait_s: float = 30.0) -> OfflineRun:
    """The run's records; first waits up to `wait_s` for its exit record, because wandb-core
    writes the log out after the logging process has finished (0: read what is there)."""
    if wait_s > 0:
        wait_until_written(_wandb_file(run_dir), wait_s)
    run_record = pb.RunRecord()
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    files: list[str] = []
    artifacts: list[str] = []
    step_metrics: dict[str, str] = {}
    defined: list[str] = []  # metric records in order: a step metric may be named by index
    exit_code = None
    for record in read_records(_wandb_file(run_dir)):
        match record.WhichOneof("record_type"):
            case "run":
                run_record = record.run
                _apply_updates(config, record.run.config.update, record.run.config.remove)
                _apply_updates(summary, record.run.summary.update, record.run.summary.remove)
            case "config":
                _apply_updates(config, record.config.update, record.config.remove)
            case "summary":
                _apply_updates(summary, record.summary.update, record.summary.remove)
            case "history":
                history.append(_history_row(record.history))
            case "files":
                files.extend(item.path for item in record.files.files)
            case "artifact":
                artifacts.append(record.artifact.name)
            case "metric":
                metric = record.metric
                defined.append(metric.name)
                if metric.step_metric:
                    step_metrics[metric.name] = metric.step_metric
                elif metric.step_metric_index:
                    step_metrics[metric.name] = defined[metric.step_metric_index - 1]
            case "exit":
                exit_code = record.exit.exit_code
    # "_wandb" holds wandb's own bookkeeping, not anything we logged.
    config.pop("_wandb", None)
    summary.pop("_wandb", None)
    return OfflineRun(
        run_dir=run_dir,
        run_id=run_record.run_id,
        project=run_record.project,
        group=run_record.run_group,
        job_type=run_record.job_type,
        name=run_record.display_name,
        config=config,
        history=history,
        summary=summary,
        files=files,
        artifacts=artifacts,
        step_metrics=step_metrics,
        exit_code=exit_code,
    )


def read_records(wandb_file: Path) -> Iterator[pb.Record]:
    """Every record of a `.wandb` transaction log, in the order they were written."""
    data = wandb_file.read_bytes()
    if _FILE_HEADER.unpack_from(data) != _FILE_HEADER_VALUES:
        raise ValueError(f"{wandb_file} is not a W&B transaction log")
    position = _FILE_HEADER.size
    record = b""
    while position + _CHUNK_HEADER.size <= len(data):
        block_left = _BLOCK_SIZE - position % _BLOCK_SIZE
        if block_left < _CHUNK_HEADER.size:  # a block's zero-filled trailer
            position += block_left
            continue
        checksum, length, chunk_type = _CHUNK_HEADER.unpack_from(data, position)
        start = position + _CHUNK_HEADER.size
        position = start + length
        chunk = data[start:position]
        if len(chunk) < length:  # the writer was killed mid-chunk
            return
        if zlib.crc32(chunk, zlib.crc32(bytes([chunk_type]))) != checksum:
            raise ValueError(f"{wandb_file}: bad checksum in chunk at byte {start}")
        record = chunk if chunk_type in (_FULL, _FIRST) else record + chunk
        if chunk_type in (_FULL, _LAST):
            yield pb.Record.FromString(record)


def wait_until_written(wandb_file: Path, timeout_s: float = 30.0) -> None:
    """Block until the log holds the run's exit record.

    run.finish() returns before wandb-core has written the log out (a few ms later; until then
    the file can be just its 7-byte header), so a run read back at once can look empty.
    """
    deadline = time.monotonic() + timeout_s
    while not any(record.HasField("exit") for record in read_records(wandb_file)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{wandb_file} has no exit record after {timeout_s} s")
        time.sleep(0.01)


def _wandb_file(run_dir: Path) -> Path:
    wandb_files = list(run_dir.glob("run-*.wandb"))
    if len(wandb_files) != 1:
        raise FileNotFoundError(f"expected one run-*.wandb file in {run_dir}, found {wandb_files}")
    return wandb_files[0]


def _history_row(history: pb.HistoryRecord) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for item in history.item:
        _set_nested(row, _key_path(item), _history_value(item))
    return row


def _history_value(item: pb.HistoryItem) -> Any:
    # wandb writes value_json by default; x_history_value_encoding="typed" fills the oneof.
    match item.WhichOneof("value"):
        case None:
            return json.loads(item.value_json)
        case "none":
            return None
        case "json":
            return json.loads(item.json)
        case typed:
            return getattr(item, typed)


def _apply_updates(
    target: dict[str, Any],
    updates: Sequence[pb.ConfigItem | pb.SummaryItem],
    removals: Sequence[pb.ConfigItem | pb.SummaryItem],
) -> None:
    for item in updates:
        _set_nested(target, _key_path(item), json.loads(item.value_json))
    for item in removals:
        *parents, leaf = _key_path(item)
        parent = target
        for key in parents:
            parent = parent.get(key, {})
        parent.pop(leaf, None)


def _key_path(item: pb.HistoryItem | pb.ConfigItem | pb.SummaryItem) -> list[str]:
    # Nested dicts are logged flattened: nested_key holds the path, key is set only for top level.
    return list(item.nested_key) or [item.key]


def _set_nested(target: dict[str, Any], path: list[str], value: Any) -> None:
    *parents, leaf = path
    for key in parents:
        target = target.setdefault(key, {})
    target[leaf] = value

"""Shards' stores and their merge: a shard's records fold into the stage's stores in question
order, whatever the shard count and whatever an earlier run left."""

from __future__ import annotations

import json

from inferscale.results import ResultStore
from inferscale.shards import (
    ATTEMPTS_FILE,
    HISTORY_FILE,
    SHARDS_DIR,
    assign,
    merge_shards,
    read_attempts,
    record_attempt,
    shard_dir,
    shard_store,
    written_ids,
)

IDS = [f"q{i}" for i in range(7)]


def record(qid: str) -> dict:
    return {"id": qid, "value": int(qid[1:]) * 10}


def local_store(tmp_path, name="s.jsonl") -> bytes:
    store = ResultStore(tmp_path / "local" / name)
    store.append([record(q) for q in IDS])
    return store.path.read_bytes()


def test_questions_are_dealt_in_turn_and_no_shard_is_empty():
    assert assign(IDS, 3) == [["q0", "q3", "q6"], ["q1", "q4"], ["q2", "q5"]]
    assert assign(IDS[:2], 4) == [["q0"], ["q1"]]
    assert assign([], 2) == []


def test_merged_shards_equal_a_local_store_byte_for_byte(tmp_path):
    expected = local_store(tmp_path)
    for shards in (1, 2, 3, 7):
        stage = tmp_path / f"stage{shards}"
        for k, ids in enumerate(assign(IDS, shards)):
            # Each shard writes its questions in its own order, in pieces.
            shard_store(stage, k, "s.jsonl").append([record(q) for q in reversed(ids)])
        gained = merge_shards(stage, IDS)
        assert gained == {"s.jsonl": 7}
        assert (stage / "s.jsonl").read_bytes() == expected
        assert not (stage / SHARDS_DIR).exists()


def test_a_shard_counts_the_merged_store_as_done_and_writes_only_the_rest(tmp_path):
    stage = tmp_path / "stage"
    ResultStore(stage / "s.jsonl").append([record("q0"), record("q1")])
    store = shard_store(stage, 0, "s.jsonl")
    assert store.done_ids() == {"q0", "q1"}
    written = store.append([record(q) for q in ("q1", "q2", "q0", "q3")])
    assert [r["id"] for r in written] == ["q2", "q3"]
    assert [r["id"] for r in ResultStore(shard_dir(stage, 0) / "s.jsonl").read()] == ["q2", "q3"]
    assert [r["id"] for r in store.read()] == ["q0", "q1", "q2", "q3"]
    assert written_ids(stage, "s.jsonl") == {"q0", "q1", "q2", "q3"}


def test_an_earlier_runs_shards_fold_in_whatever_the_new_shard_count(tmp_path):
    expected = local_store(tmp_path)
    stage = tmp_path / "stage"
    # A run of 3 shards died: shard 0 wrote two questions, shard 2 one, with a cut last line.
    shard_store(stage, 0, "s.jsonl").append([record("q0"), record("q3")])
    shard_store(stage, 2, "s.jsonl").append([record("q2")])
    with (shard_dir(stage, 2) / "s.jsonl").open("a") as f:
        f.write('{"id": "q5", "val')
    merge_shards(stage, IDS)
    assert written_ids(stage, "s.jsonl") == {"q0", "q2", "q3"}
    # The next run, with 2 shards, does the rest.
    left = [q for q in IDS if q not in {"q0", "q2", "q3"}]
    for k, ids in enumerate(assign(left, 2)):
        shard_store(stage, k, "s.jsonl").append([record(q) for q in ids])
    merge_shards(stage, IDS)
    assert (stage / "s.jsonl").read_bytes() == expected


def test_records_of_questions_outside_the_order_are_kept_after_it(tmp_path):
    stage = tmp_path / "stage"
    ResultStore(stage / "s.jsonl").append([record("q9"), record("q1")])
    shard_store(stage, 0, "s.jsonl").append([record("q0")])
    merge_shards(stage, ["q0", "q1"])
    assert [r["id"] for r in ResultStore(stage / "s.jsonl").read()] == ["q0", "q1", "q9"]


def test_attempts_are_numbered_and_kept_once_in_the_stage_history(tmp_path):
    stage = tmp_path / "stage"
    assert record_attempt(stage, 0, "started", questions=3) == 1
    assert record_attempt(stage, 0, "started", questions=3) == 2
    assert record_attempt(stage, 0, "finished", stores={"s.jsonl": {"written": 1}}) == 2
    assert record_attempt(stage, 1, "started", questions=2) == 1
    shard_store(stage, 0, "s.jsonl").append([record("q0")])
    # A merge cut short after writing the history, before removing the shard folders.
    history = read_attempts(shard_dir(stage, 0) / ATTEMPTS_FILE)
    (stage / HISTORY_FILE).write_text("".join(json.dumps(e) + "\n" for e in history))
    merge_shards(stage, IDS)
    events = read_attempts(stage / HISTORY_FILE)
    assert [(e["shard"], e["attempt"], e["event"]) for e in events] == [
        (0, 1, "started"),
        (0, 2, "started"),
        (0, 2, "finished"),
        (1, 1, "started"),
    ]

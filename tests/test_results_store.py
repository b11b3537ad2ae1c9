"""The JSONL result store: appends, reads, resume ids, and recovery from a crash mid-write."""

import json

import pytest

from inferscale.results import ResultStore

RECORDS = [
    {"id": "q0", "answers": ["3", "4"], "correct": [True, False]},
    {"id": "q1", "answers": ["7"], "correct": [True], "note": "ключ"},
    {"id": "q2", "answers": [], "correct": []},
]


def whole_lines(path) -> list[dict]:
    """Every line of the file, each of which must be a whole JSON record ending in a newline."""
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_missing_file_reads_as_empty_and_parent_is_created(tmp_path):
    store = ResultStore(tmp_path / "deep" / "er" / "results.jsonl")
    assert (tmp_path / "deep" / "er").is_dir()
    assert store.read() == []
    assert store.done_ids() == set()


def test_append_then_read_returns_records_in_order(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(RECORDS[:2])
    store.append(RECORDS[2:])
    assert store.read() == RECORDS
    assert store.done_ids() == {"q0", "q1", "q2"}
    assert whole_lines(store.path) == RECORDS


def test_a_new_store_on_the_same_file_sees_earlier_records(tmp_path):
    ResultStore(tmp_path / "results.jsonl").append(RECORDS)
    assert ResultStore(tmp_path / "results.jsonl").read() == RECORDS


def test_append_of_nothing_keeps_the_file(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(RECORDS)
    store.append([])
    assert store.read() == RECORDS


@pytest.mark.parametrize("cut", [1, 7, 25], ids=["one-char", "after-key", "mid-list"])
def test_truncated_last_line_is_skipped_on_read(tmp_path, cut):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(RECORDS[:2])
    with store.path.open("a") as f:  # the run died while writing q2
        f.write(json.dumps(RECORDS[2])[:cut])
    assert store.read() == RECORDS[:2]
    assert store.done_ids() == {"q0", "q1"}


@pytest.mark.parametrize("cut", [1, 7, 25], ids=["one-char", "after-key", "mid-list"])
def test_truncated_last_line_is_removed_before_the_next_append(tmp_path, cut):
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(RECORDS[:2])
    with store.path.open("a") as f:
        f.write(json.dumps(RECORDS[2])[:cut])
    store.append(RECORDS[2:])  # the resumed run redoes q2
    assert store.read() == RECORDS
    assert whole_lines(store.path) == RECORDS


def test_truncated_only_line_is_removed_before_the_next_append(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    store.path.write_text('{"id": "q0", "ans')
    assert store.read() == []
    store.append(RECORDS)
    assert whole_lines(store.path) == RECORDS


def test_record_written_without_its_newline_is_not_reported_done_then_lost(tmp_path):
    # The crash came after the record's JSON but before its "\n". Whatever read() reports as
    # done must still be in the file after the next append, or resuming skips it for good.
    store = ResultStore(tmp_path / "results.jsonl")
    store.append(RECORDS[:1])
    with store.path.open("a") as f:
        f.write(json.dumps(RECORDS[1]))
    done = store.done_ids()
    assert "q0" in done
    store.append([r for r in RECORDS[1:] if r["id"] not in done])
    kept = whole_lines(store.path)
    assert {r["id"] for r in kept} == {"q0", "q1", "q2"}
    assert store.read() == kept

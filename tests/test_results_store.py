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


def write_lines(path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


DAMAGE = {
    "not-json": b'{"id": "q1", "answers": ["7"], "corr',
    "zeroed-block": b"\x00" * 40,
    "not-an-object": b'["q1"]',
    "no-id": b'{"answers": ["7"]}',
    "id-not-a-string": b'{"id": 1, "answers": ["7"]}',
    "bad-utf8": b'{"id": "q1", "note": "\xff\xfe"}',
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_a_damaged_middle_line_hides_nothing_after_it(tmp_path, damage, caplog):
    store = ResultStore(tmp_path / "results.jsonl")
    lines = [json.dumps(r).encode() for r in RECORDS]
    write_lines(store.path, [lines[0], damage, lines[2]])
    with caplog.at_level("WARNING"):
        assert store.read() == [RECORDS[0], RECORDS[2]]
    assert "1 damaged" in caplog.text and "line 2" in caplog.text
    assert store.done_ids() == {"q0", "q2"}


def test_damaged_lines_are_set_aside_before_the_next_append(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    lines = [json.dumps(r).encode() for r in RECORDS]
    write_lines(store.path, [lines[0], DAMAGE["not-json"], lines[2]])
    written = ResultStore(store.path).append([RECORDS[1]])  # the damaged question, done again
    assert written == [RECORDS[1]]
    assert whole_lines(store.path) == [RECORDS[0], RECORDS[2], RECORDS[1]]
    kept_aside = (tmp_path / "results.jsonl.damaged").read_bytes()
    assert kept_aside == b"2: " + DAMAGE["not-json"] + b"\n"


def test_a_question_is_stored_once_however_often_it_is_appended(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    assert store.append(RECORDS[:2]) == RECORDS[:2]
    assert store.append(RECORDS) == RECORDS[2:]
    assert ResultStore(store.path).append([RECORDS[0], RECORDS[0]]) == []
    assert whole_lines(store.path) == RECORDS


def test_repeated_ids_in_a_file_count_once_and_the_first_is_kept(tmp_path):
    store = ResultStore(tmp_path / "results.jsonl")
    other = {**RECORDS[0], "answers": ["9"]}
    write_lines(store.path, [json.dumps(r).encode() for r in (RECORDS[0], RECORDS[1], other)])
    assert store.read() == RECORDS[:2]
    store.append(RECORDS[2:])
    assert whole_lines(store.path) == RECORDS

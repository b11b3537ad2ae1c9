"""`inferscale gc`: artifact directories no current key points to are listed with their sizes,
deleted only with --yes; current keys, the keys of --keep configs and directories a run is
computing now are kept and named."""

from __future__ import annotations

import pytest
from pipeline_config import tiny_config, write_config

from inferscale.cli import main
from inferscale.config import load_config
from inferscale.locks import DirectoryLock, lock_path
from inferscale.stages import plan
from inferscale.stale_artifacts import directory_bytes, sweep


def fill(directory, size: int, finished: bool) -> None:
    directory.mkdir(parents=True)
    (directory / "sub").mkdir()
    (directory / "sub" / "weights.bin").write_bytes(b"x" * size)
    if finished:
        (directory / "_COMPLETE.json").write_text("{}")


@pytest.fixture
def experiment(tmp_path):
    """The tiny experiment with every current artifact on disk, and three stale directories:
    an evaluation of older settings, a model of older code, and a stage that no longer is."""
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    p = plan(load_config(path))
    for artifact in p.all():
        fill(artifact.path, 10, finished=True)
    artifacts = p.root / "artifacts"
    fill(artifacts / "evaluate" / "A-0000000000000000", 3000, finished=True)
    fill(artifacts / "sft" / "B-1111111111111111", 2048, finished=False)
    fill(artifacts / "old_stage" / "x-2222222222222222", 5, finished=True)
    return path


def stale_paths(path):
    artifacts = plan(load_config(path)).root / "artifacts"
    return {
        artifacts / "evaluate" / "A-0000000000000000",
        artifacts / "sft" / "B-1111111111111111",
        artifacts / "old_stage" / "x-2222222222222222",
    }


def test_directory_bytes_counts_every_file_below(tmp_path):
    fill(tmp_path / "d", 1234, finished=True)
    assert directory_bytes(tmp_path / "d") == 1234 + 2  # the marker holds "{}"


def test_sweep_without_delete_lists_and_keeps_everything(experiment):
    p = plan(load_config(experiment))
    current = {a.path for a in p.all()}
    result = sweep(p.root / "artifacts", current, delete=False)
    assert {d.path for d in result.stale} == stale_paths(experiment)
    assert {d.path for d in result.kept} == current
    by_path = {d.path.name: d for d in result.stale}
    assert by_path["A-0000000000000000"].bytes == 3002 and by_path["A-0000000000000000"].finished
    assert by_path["B-1111111111111111"].bytes == 2048
    assert not by_path["B-1111111111111111"].finished
    assert all(path.is_dir() for path in stale_paths(experiment))


def test_gc_lists_then_deletes_with_yes_and_never_touches_current_keys(experiment, capsys):
    p = plan(load_config(experiment))
    src = str(experiment)
    assert main(["gc", src]) == 0
    out = capsys.readouterr().out
    assert f"kept {len(p.all())} directories of current keys (" in out
    assert f"stale: 3 directories no current key of {src} points to:" in out
    assert f"2.9 KiB  finished    {p.root / 'artifacts' / 'evaluate' / 'A-0000000000000000'}" in out
    assert f"2.0 KiB  unfinished  {p.root / 'artifacts' / 'sft' / 'B-1111111111111111'}" in out
    assert f"would free 4.9 KiB: run `inferscale gc {src} --yes` to delete them" in out
    assert all(path.is_dir() for path in stale_paths(experiment))

    assert main(["gc", src, "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted: 3 directories" in out and "freed 4.9 KiB" in out
    assert not any(path.exists() for path in stale_paths(experiment))
    assert not (p.root / "artifacts" / "old_stage").joinpath("x-2222222222222222").exists()
    assert all(a.complete and a.damage() == [] for a in p.all())
    assert not any(lock_path(path).exists() for path in stale_paths(experiment))

    assert main(["gc", src, "--yes"]) == 0
    assert "nothing stale" in capsys.readouterr().out
    fill(p.root / "artifacts" / "sft" / "A-3333333333333333", 100, finished=True)
    assert main(["gc", src]) == 0
    assert "stale: 1 directory no current key" in capsys.readouterr().out


def test_a_directory_another_run_computes_is_kept_and_named(experiment, capsys):
    p = plan(load_config(experiment))
    busy = p.root / "artifacts" / "evaluate" / "A-0000000000000000"
    other_run = DirectoryLock(busy, "evaluate")
    other_run.acquire()  # as a live run computing it holds it
    try:
        assert main(["gc", str(experiment), "--yes"]) == 0
    finally:
        other_run.release()
    out = capsys.readouterr().out
    assert f"kept, a run is computing it: {busy} (pid " in out
    assert "deleted: 2 directories" in out and "freed 2.0 KiB" in out
    assert busy.is_dir() and (busy / "sub" / "weights.bin").stat().st_size == 3000


def test_keep_keeps_the_keys_of_another_config_sharing_the_folder(experiment, capsys):
    # Another experiment of the same name into the same folder, with other budgets: its
    # evaluations and analysis are stale to the first config alone.
    other = write_config(
        experiment.parent / "other.yaml",
        tiny_config(experiment.parent / "runs", **{"evaluation.budgets": [1, 2]}),
    )
    theirs = plan(load_config(other))
    for artifact in theirs.all():
        if not artifact.path.exists():
            fill(artifact.path, 10, finished=True)
    assert main(["gc", str(experiment)]) == 0
    listed = capsys.readouterr().out
    assert str(theirs.evaluate["A"].path) in listed and str(theirs.analyze.path) in listed

    assert main(["gc", str(experiment), "--keep", str(other), "--yes"]) == 0
    out = capsys.readouterr().out
    assert "deleted: 3 directories" in out
    assert all(a.complete for a in theirs.all())
    assert all(a.complete for a in plan(load_config(experiment)).all())


def test_gc_with_overrides_keeps_the_overridden_keys(experiment, capsys):
    assert main(["gc", str(experiment), "--set", "seed=9", "--yes"]) == 0
    # Every key of seed 9 is new: everything on disk was stale to it.
    assert not any(a.path.exists() for a in plan(load_config(experiment)).all())
    assert "kept 0 directories of current keys" in capsys.readouterr().out


def test_a_bad_keep_config_is_refused_before_anything_is_deleted(experiment, capsys):
    with pytest.raises(SystemExit) as exit:
        main(["gc", str(experiment), "--keep", str(experiment.parent / "missing.yaml"), "--yes"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "missing.yaml: does not exist" in err
    assert all(path.is_dir() for path in stale_paths(experiment))


def test_nothing_to_collect_without_an_artifacts_folder(tmp_path, capsys):
    path = write_config(tmp_path / "tiny.yaml", tiny_config(tmp_path / "runs"))
    assert main(["gc", str(path), "--yes"]) == 0
    assert "nothing to collect" in capsys.readouterr().out

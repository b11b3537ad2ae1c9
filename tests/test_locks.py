"""One writer per artifact directory: a live holder stops a second writer with one line naming
it; a dead holder's lock is free, however it died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from inferscale.locks import DirectoryLock, StageBusy, lock_path


def hold_in_another_process(directory) -> subprocess.Popen:
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from inferscale.locks import DirectoryLock
        DirectoryLock(Path({str(directory)!r}), "sft").acquire()
        print("held", flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_stops_a_second_writer_naming_it(tmp_path):
    directory = tmp_path / "sft" / "A-123"
    holder = hold_in_another_process(directory)
    try:
        with pytest.raises(StageBusy) as caught:
            DirectoryLock(directory, f"sft at {directory}").acquire()
    finally:
        holder.kill()
        holder.wait()
    message = str(caught.value)
    assert "\n" not in message
    assert f"sft at {directory} is being computed by another run (pid {holder.pid} on" in message
    assert "wait for that run to finish or stop it" in message


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_a_dead_holders_lock_is_taken_over(tmp_path, how):
    directory = tmp_path / "evaluate" / "A-123"
    holder = hold_in_another_process(directory)
    os.kill(holder.pid, how)
    holder.wait()
    lock = DirectoryLock(directory, "evaluate")
    lock.acquire()
    assert f'"pid": {os.getpid()}' in lock_path(directory).read_text()
    lock.release()


def test_the_same_process_cannot_take_a_lock_twice_and_can_after_release(tmp_path):
    first = DirectoryLock(tmp_path / "a", "a")
    first.acquire()
    with pytest.raises(StageBusy):
        DirectoryLock(tmp_path / "a", "a").acquire()
    first.release()
    again = DirectoryLock(tmp_path / "a", "a")
    again.acquire()
    again.release()

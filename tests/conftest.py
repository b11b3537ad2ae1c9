"""Test-wide isolation: Prefect, W&B and the HF hub never touch the user's home or the network."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_HOME = Path(tempfile.mkdtemp(prefix="inferscale-tests-"))
# Set before Prefect is imported anywhere: it reads PREFECT_HOME once.
os.environ["PREFECT_HOME"] = str(_HOME / "prefect")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
for _key in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
    os.environ[_key] = str(_HOME / "wandb" / _key.lower())
os.environ["WANDB_ERROR_REPORTING"] = "false"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HOME"] = str(_HOME / "hf")


@pytest.fixture(scope="session")
def prefect_harness():
    """A real Prefect API with its own temporary database, shared by the flow tests."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture
def verify_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """What every grader sends its math-verify worker from now on (the calls still run)."""
    from inferscale.grading import _Worker

    sent: list[tuple[str, str]] = []
    verify = _Worker.verify

    def counted(self, pred: str, gold: str, timeout_s: float) -> dict:
        sent.append((pred, gold))
        return verify(self, pred, gold, timeout_s)

    monkeypatch.setattr(_Worker, "verify", counted)
    return sent

"""CPU numerics pinned to kernels every x86-64 machine runs alike, in the CLI process and in the
training ranks; a value the user set wins."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
from pipeline_config import REPO, tiny_config
from safetensors.torch import load_file

from inferscale import numerics
from inferscale.config import parse_config
from inferscale.data.prepare import TOKENIZER_DIR, TRAIN_FILE, prepare_data
from inferscale.models.launch import run_sft, sft_spec
from inferscale.numerics import MODE_ENV, PIN_NAMES, X86_PINS, cpu_pins, pinned_env

ON_AVX2 = cpu_pins({}) == X86_PINS  # x86-64 with AVX2 and FMA, as every machine we run on
needs_avx2 = pytest.mark.skipif(not ON_AVX2, reason="pins ATen only on x86-64 with AVX2")


def without_pins() -> dict[str, str]:
    """This environment less the pins and anything that would vary the kernels."""
    dropped = {MODE_ENV, *PIN_NAMES, "MKL_ENABLE_INSTRUCTIONS", "MKL_VERBOSE"}
    return {k: v for k, v in os.environ.items() if k not in dropped}


@needs_avx2
def test_the_pins_are_added_under_the_users_own_values():
    assert pinned_env({}) == X86_PINS
    env = pinned_env({"MKL_CBWR": "AUTO", "PATH": "/bin"})
    assert env["MKL_CBWR"] == "AUTO" and env["PATH"] == "/bin"
    assert env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert pinned_env({MODE_ENV: "native"}) == {MODE_ENV: "native"}
    with pytest.raises(ValueError, match=MODE_ENV):
        cpu_pins({MODE_ENV: "fast"})


def test_no_pins_off_x86_and_no_avx2_kernels_without_avx2(monkeypatch):
    monkeypatch.setattr(numerics.platform, "machine", lambda: "aarch64")
    assert cpu_pins({}) == {}
    monkeypatch.setattr(numerics.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(numerics, "_cpu_flags", lambda: {"sse2", "avx"})
    assert cpu_pins({}) == {"MKL_CBWR": "COMPATIBLE", "ONEDNN_MAX_CPU_ISA": "AVX2"}


# As the `inferscale` command starts: inferscale.cli first (it imports torch), then a matmul.
CLI_PROCESS = """
import json
import {module}
import torch
from inferscale.numerics import describe
torch.ones(8, 8) @ torch.ones(8, 8)
print(json.dumps(describe()))
"""


def cli_process(env: dict[str, str], module: str = "inferscale") -> tuple[dict, str]:
    result = subprocess.run(
        [sys.executable, "-c", CLI_PROCESS.format(module=module)],
        env={**env, "MKL_VERBOSE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    return json.loads(lines[-1]), result.stdout


@needs_avx2
def test_the_cli_process_runs_pinned_kernels_unless_the_user_set_others():
    described, log = cli_process(without_pins(), module="inferscale.cli")
    assert described["cpu_capability"] == "AVX2"
    assert described["env"] == {MODE_ENV: None, **X86_PINS}
    assert "CNR:COMPATIBLE" in log  # MKL's verbose line for the matmul: its CNR branch

    own = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "AUTO"}
    described, log = cli_process({**without_pins(), **own})
    assert described["cpu_capability"] == "DEFAULT"
    assert described["env"]["MKL_CBWR"] == "AUTO" and "CNR:AUTO" in log

    described, log = cli_process({**without_pins(), MODE_ENV: "native"})
    assert described["env"] == {MODE_ENV: "native", **dict.fromkeys(PIN_NAMES)}
    assert "CNR:OFF" in log


def train(tmp_path, name: str) -> tuple[dict, str]:
    """A few steps of SFT of the tiny policy under the launcher; its summary and weights hash."""
    config = parse_config(
        tiny_config(tmp_path, **{"sft.max_steps": 6, "sft.warmup_steps": 1}),
        base_dir=REPO / "configs",
    )
    data = tmp_path / "data"
    if not data.exists():
        prepare_data(config.data, 0, data)
    out = tmp_path / name
    spec = sft_spec(
        config.policies[0],
        config.sft,
        config.data.format.model_dump(),
        str(data / TOKENIZER_DIR),
        data / TRAIN_FILE,
        out,
        seed=0,
        report_to=[],
    )
    summary = run_sft(spec, config.sft, {}, out / "train.log")
    tensors = load_file(str(out / "model.safetensors"))
    digest = hashlib.sha256()
    for key in sorted(tensors):
        digest.update(tensors[key].numpy().tobytes())
    return summary, digest.hexdigest()


@needs_avx2
@pytest.mark.slow
def test_pinned_training_does_not_follow_the_kernels_the_machine_would_pick(tmp_path, monkeypatch):
    for name in (MODE_ENV, *PIN_NAMES):
        monkeypatch.delenv(name, raising=False)
    pinned, weights = train(tmp_path, "pinned")
    assert pinned["numerics"] == {
        "cpu_capability": "AVX2",
        "env": {MODE_ENV: None, **X86_PINS},
    }

    # Under the pins, MKL's own dispatch (what it would pick on another machine) is ignored.
    monkeypatch.setenv("MKL_ENABLE_INSTRUCTIONS", "SSE4_2")
    again, same = train(tmp_path, "pinned-mkl-sse42")
    assert same == weights
    assert again["loss_history"] == pinned["loss_history"]
    monkeypatch.delenv("MKL_ENABLE_INSTRUCTIONS")

    # ... while the kernels a machine without the pins would run change the weights.
    monkeypatch.setenv(MODE_ENV, "native")
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "default")
    native, other = train(tmp_path, "native-default")
    assert native["numerics"]["cpu_capability"] == "DEFAULT"
    assert other != weights

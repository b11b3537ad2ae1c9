"""The generation backend interface: a batch of requests in, n samples per request out.

Tree search calls `generate` once per depth with every open node of every question, so a
backend must batch across requests as well as across samples of one request.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

FinishReason = Literal["stop", "eos", "length"]


@dataclass(frozen=True)
class Request:
    prompt: str
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    max_new_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0  # sample i of this request uses seed + i


@dataclass(frozen=True)
class Sample:
    text: str  # the stop string included, so a step keeps its tag
    num_tokens: int  # generated tokens
    finish_reason: FinishReason


@dataclass(frozen=True)
class Completion:
    prompt_tokens: int
    samples: list[Sample] = field(default_factory=list)


class Backend(Protocol):
    name: str

    def generate(self, requests: list[Request]) -> list[Completion]:
        """One Completion per request, in order, each with `request.n` samples."""
        ...

    def close(self) -> None: ...

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


def validate_request(request: Request) -> None:
    """Refuse a request no backend can serve, before any work starts."""
    if request.n < 1 or request.max_new_tokens < 1:
        raise ValueError(f"n and max_new_tokens must be at least 1: {request}")
    if request.temperature < 0 or not 0 < request.top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1: {request}")
    if "" in request.stop:
        raise ValueError(f"an empty stop string would stop every sample at once: {request}")


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

"""The step format of solutions (Math-Shepherd's): `Step k: <text> ки` lines.

The step tag is where a PRM is read and where generation stops for step-level search; the last
step states the answer with the answer phrase (`The answer is: X`). Both are configurable.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class StepFormat:
    tag: str = " ки"
    answer_phrase: str = "The answer is:"
    prompt_template: str = "Question: {question}\nAnswer:\n"

    def prompt(self, question: str) -> str:
        return self.prompt_template.format(question=question)

    def step_line(self, k: int, text: str) -> str:
        """The k-th step (1-based) as one line, tag and newline included."""
        return f"Step {k}: {text}{self.tag}\n"

    def answer_text(self, answer: str) -> str:
        return f"{self.answer_phrase} {answer}"

    def solution(self, steps: list[str]) -> str:
        return "".join(self.step_line(k, s) for k, s in enumerate(steps, 1))

    def split_steps(self, solution: str) -> list[str]:
        """Steps of a (possibly partial) solution, prefixes and tags removed.

        A trailing fragment without its tag (cut by a token limit) counts as a step.
        """
        parts = solution.split(self.tag)
        steps = []
        for part in parts:
            text = _STEP_PREFIX.sub("", part.strip())
            if text:
                steps.append(text)
        return steps

    def is_final(self, step_text: str) -> bool:
        """Whether a step (or a whole solution) states its answer."""
        return self.answer_phrase in step_text


_STEP_PREFIX = re.compile(r"^Step\s*\d+\s*:\s*")

"""`--set key.path=value` overrides of an experiment's YAML mapping, applied before validation.

A path names nested mappings by key and list items by index (`policies.0.hidden_size`); the
value is one YAML value, read as the experiment file is read. The result is validated exactly
like the file, so a key that does not exist is refused there, with the key meant.
"""

from __future__ import annotations

import copy
import shlex
from collections.abc import Callable, Sequence
from typing import Any


class OverrideError(ValueError):
    """An override that cannot be applied, as one line naming it and the fix."""


def parse_override(text: str, parse_value: Callable[[str], Any]) -> tuple[list[str], Any]:
    """The path and the value of `key.path=value`."""
    path, sep, value = text.partition("=")
    parts = path.strip().split(".")
    if not sep or not all(part.strip() for part in parts):
        raise OverrideError(
            f"--set {text}: expected key.path=value (e.g. --set evaluation.budgets=[1,2,4])"
        )
    try:
        parsed = parse_value(value)
    except ValueError as err:
        raise OverrideError(
            f"--set {text}: the value is {err}; write one YAML value (3, 1e-3, true, [1, 2], "
            "{a: 1}, 'a: b')"
        ) from None
    return [part.strip() for part in parts], parsed


def _kind(node: Any) -> str:
    if isinstance(node, bool):
        return "true/false"
    if isinstance(node, int | float):
        return "a number"
    return "a string" if isinstance(node, str) else f"a {type(node).__name__}"


def _item(node: list, part: str, where: str, text: str) -> int:
    """The index `part` addresses in the list `node`."""
    if not part.isdigit() or int(part) >= len(node):
        items = f"0-{len(node) - 1}" if node else "none: it is empty"
        raise OverrideError(
            f"--set {text}: {where} is a list; address one of its items by index ({items}), "
            f"not {part!r}"
        )
    return int(part)


def set_path(raw: dict, path: list[str], value: Any, text: str) -> dict:
    """A copy of `raw` with `value` at `path`; a missing mapping on the way is made."""
    out = copy.deepcopy(raw)
    node: Any = out
    for depth, part in enumerate(path):
        where = ".".join(path[:depth]) or "the top"
        last = depth == len(path) - 1
        if isinstance(node, list):
            key: Any = _item(node, part, where, text)
        elif isinstance(node, dict):
            key = part
            if not last and node.get(key) is None:
                node[key] = {}
        else:
            shown = repr(node) if len(repr(node)) <= 40 else repr(node)[:37] + "..."
            raise OverrideError(
                f"--set {text}: {where} is {_kind(node)} ({shown}), not a section; "
                f"set {where} itself"
            )
        if last:
            node[key] = value
        else:
            node = node[key]
    return out


def apply_overrides(raw: Any, overrides: Sequence[str], parse_value: Callable[[str], Any]) -> Any:
    """`raw` with each override applied in order (a later one wins over an earlier one).

    A document that is no mapping is returned as it is, for validation to refuse."""
    if not isinstance(raw, dict):
        return raw
    for text in overrides:
        path, value = parse_override(text, parse_value)
        raw = set_path(raw, path, value, text)
    return raw


def config_source(path: str, overrides: Sequence[str]) -> str:
    """How a config with overrides is named in errors, logs and its flow run: the arguments
    that reproduce it (`configs/default.yaml --set seed=3`)."""
    return " ".join([path, *(f"--set {shlex.quote(text)}" for text in overrides)])

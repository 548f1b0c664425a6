"""Small command-line helpers shared by the subcommand modules."""
from __future__ import annotations

import math
from typing import Any


def non_finite_path(value: Any, path: str = "") -> str | None:
    """Dotted path of the first NaN/infinite number inside ``value`` (dicts, lists), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return path or "<value>"
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = ((f"[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for key, v in items:
        key = str(key)
        sub = f"{path}{key}" if key.startswith("[") else (f"{path}.{key}" if path else key)
        found = non_finite_path(v, sub)
        if found:
            return found
    return None


def parse_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` strings -> dict, values parsed as YAML scalars (numbers, bools, lists)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ValueError(f"--option {key}: value {value!r} is not valid YAML "
                             f"({str(exc).splitlines()[0]})") from None
        if non_finite_path(out[key]):
            raise ValueError(f"--option {key}: non-finite number in {value!r}")
    return out


def error_line(exc: BaseException) -> str:
    """One line for a bad input or a failed read/write: the file first, then the problem."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        where = str(exc.filename) + (f" -> {exc.filename2}" if exc.filename2 else "")
        return f"{where}: {exc.strerror}"
    if isinstance(exc, KeyError) and len(exc.args) == 1 and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__

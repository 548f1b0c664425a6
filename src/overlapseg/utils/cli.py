"""Small command-line helpers shared by the subcommand modules."""
from __future__ import annotations


def parse_options(pairs: list[str] | None) -> dict:
    """``KEY=VALUE`` strings -> dict, values parsed as YAML scalars (numbers, bools, lists)."""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"--option expects KEY=VALUE, got {pair!r}")
        out[key] = yaml.safe_load(value)
    return out

"""Raw-format adapters. Each module exposes ``read(raw: Path, **options) -> Iterator[Sample]``.

This package module stays free of heavy imports: the Snakefile uses ``adapter_options`` to
check the config's adapter options before any job runs.
"""
from __future__ import annotations

import ast
import difflib
import importlib.util
from functools import lru_cache

# format name -> module under overlapseg.data.adapters
ADAPTERS: dict[str, str] = {
    "isbi2014": "isbi2014",
    "isbi2014-edf": "isbi2014_edf",
    "coco": "coco",
    "labelstudio": "labelstudio",
    "label-images": "label_images",
}


def unknown_format(fmt: str) -> ValueError:
    return ValueError(f"unknown dataset format {fmt!r}; known formats: {', '.join(ADAPTERS)}")


@lru_cache(maxsize=None)
def adapter_options(fmt: str) -> tuple[str, ...]:
    """The options ``fmt``'s adapter accepts: the keyword parameters of its ``read`` after
    ``raw``, read from the module's source without importing it."""
    if fmt not in ADAPTERS:
        raise unknown_format(fmt)
    spec = importlib.util.find_spec(f"{__name__}.{ADAPTERS[fmt]}")
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == "read":
            args = node.args
            return tuple(a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs][1:])
    raise RuntimeError(f"{spec.origin}: adapter has no read() function")


def check_adapter_options(fmt: str, options: dict, where: str) -> None:
    """ValueError naming ``where`` and the unknown key(s), listing the known ones."""
    known = adapter_options(fmt)
    if not isinstance(options, dict):
        raise ValueError(f"{where}: adapter options must be a mapping of option: value")
    unknown = [k for k in options if k not in known]
    if unknown:
        hints = [m for k in unknown for m in difflib.get_close_matches(str(k), known, n=1)]
        hint = f"; did you mean {', '.join(map(repr, hints))}?" if hints else ""
        raise ValueError(f"{where}: unknown option(s) {', '.join(map(repr, unknown))} for format "
                         f"{fmt!r} (known: {', '.join(known) or 'none'}){hint}")


def check_config_adapter_options(config: dict) -> None:
    """Every ``datasets.NAME.options`` of a workflow config known to its format's adapter.

    The config checks (``overlapseg.utils.config``) sit below ``data`` and cannot import this
    package; the caller that owns the config (the Snakefile, or a config module above
    ``data``) passes this function in, e.g. ``validate_config(config, schema,
    extra_checks=[check_config_adapter_options])``.
    """
    for name, ds in (config.get("datasets") or {}).items():
        check_adapter_options(ds["format"], ds.get("options") or {}, f"config: datasets.{name}.options")

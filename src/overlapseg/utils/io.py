"""File output helpers that never leave a half-written result behind.

Snakemake treats an existing output file as done, so every writer in the package goes
through these helpers: content is written to a temporary sibling and renamed into place
only once complete (rename is atomic on POSIX within one filesystem).

The temporary sibling of ``dir/NAME`` is ``dir/.NAME.<8 random chars><suffix>``; a job killed
hard (SIGKILL, node failure) leaves it behind, so the next write of the same target removes
such leftovers first. ``mkstemp``/``mkdtemp`` create 0600/0700 entries; the final output gets
the permissions a plain ``open``/``mkdir`` would give under the user's umask, so colleagues
sharing a cluster filesystem can read results. A failed write (disk full, no permission)
raises an OSError naming the target.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def current_umask() -> int:
    """The process umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _temp_pattern(path: Path, suffix: str) -> re.Pattern:
    # tempfile's random part: 8 characters from [a-z0-9_]
    return re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")


def remove_stale_temps(path: str | os.PathLike, suffix: str = "") -> list[Path]:
    """Remove hidden temporaries an earlier, killed write of ``path`` left next to it."""
    path = Path(path)
    pattern = _temp_pattern(path, suffix)
    removed = []
    try:
        siblings = list(path.parent.iterdir())
    except OSError:
        return removed
    for p in siblings:
        if not pattern.fullmatch(p.name):
            continue
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
    return removed


def _named_error(exc: BaseException, path: Path) -> BaseException | None:
    """The OSError to raise instead of ``exc`` (a failed write of ``path``), or None to keep it."""
    if isinstance(exc, OSError) and not exc.filename:
        return OSError(exc.errno, exc.strerror or str(exc), str(path))
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("PytorchStreamWriter" in text or "inline_container" in text):
        # torch.save reports a failed write as "[enforce fail at inline_container.cc:...]"
        try:
            full = shutil.disk_usage(path.parent).free < (1 << 20)
        except OSError:
            full = False
        if full:
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return OSError(errno.EIO, f"write failed ({text.splitlines()[0][:200]})", str(path))
    return None


@contextlib.contextmanager
def _naming_failures(path: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, RuntimeError) as exc:
        named = _named_error(exc, path)
        if named is None:
            raise
        raise named from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it onto ``path`` only on success."""
    path = Path(path)
    suffix = path.suffix or ".tmp"
    with _naming_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path, suffix)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        with _naming_failures(path):
            yield tmp_path
            if tmp_path.exists():
                os.chmod(tmp_path, 0o666 & ~current_umask())
            os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory that replaces ``path`` as a whole on success."""
    path = Path(path)
    with _naming_failures(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        with _naming_failures(path):
            yield tmp
            os.chmod(tmp, 0o777 & ~current_umask())
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, bytes):
        return obj.decode("ascii")
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, fixed indent) so reruns are byte-identical."""
    return json.dumps(obj, indent=1, sort_keys=True, default=_json_default, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, obj: Any) -> None:
    text = dumps_json(obj)
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: file not found") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- file digests
def file_record(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}


def tree_record(path: str | os.PathLike) -> dict:
    """One sha256 over a folder: of the lines ``relative/path<TAB>sha256`` of its files, sorted."""
    path = Path(path)
    if path.is_file():
        return file_record(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: folder not found")
    lines = [f"{f.relative_to(path).as_posix()}\t{sha256_file(f)}\n"
             for f in sorted(p for p in path.rglob("*") if p.is_file())]
    digest = hashlib.sha256("".join(lines).encode()).hexdigest()
    return {"path": str(path), "sha256_tree": digest, "files": len(lines)}

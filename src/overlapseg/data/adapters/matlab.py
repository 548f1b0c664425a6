"""Reading MATLAB ``.mat`` files of either generation, detected from the file itself.

MATLAB writes v4/v5/v7 files in its own binary format (``scipy.io.loadmat``) and v7.3
files as HDF5 behind a 512-byte text userblock (``h5py``). The ISBI 2014 archives mix
both, and file names say nothing about the version, so :func:`mat_version` looks at the
header. In a v7.3 file every array is stored transposed (MATLAB is column-major) and a
cell array is a dataset of object references into ``#refs#``; :class:`MatFile` undoes
both so callers see the same shapes ``scipy.io.loadmat`` would give. v7.3 cell items are
resolved one at a time on access (a 900-image ground-truth file is never decoded at
once); classic files cannot be read piecewise and are loaded in one pass.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from overlapseg.data.canonical import DataError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def mat_version(path: str | os.PathLike) -> str:
    """``"7.3"`` for HDF5-based files, ``"5"`` for the classic format (v5/v6/v7), ``"4"`` otherwise.

    MATLAB's v7.3 header text reads "MATLAB 7.3 MAT-file"; the HDF5 superblock may sit at
    byte 0 or at any power-of-two offset from 512 (the userblock), so both are checked.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(128)
            if head.startswith(b"MATLAB 7.3") or head.startswith(HDF5_SIGNATURE):
                return "7.3"
            offset = 512
            size = path.stat().st_size
            while offset + 8 <= size and offset <= 1 << 20:
                f.seek(offset)
                if f.read(8) == HDF5_SIGNATURE:
                    return "7.3"
                offset *= 2
    except OSError as exc:
        raise DataError(path, f"cannot read MATLAB file ({exc.strerror or exc})") from None
    if len(head) < 8:
        raise DataError(path, "not a MATLAB .mat file (file too short)")
    if head[:6] == b"MATLAB" or head[124:128] in (b"\x00\x01IM", b"\x01\x00MI"):
        return "5"
    return "4"


class MatFile:
    """A ``.mat`` file opened for reading variables by name (v4/v5 or v7.3).

    ``cell(key)`` returns a list-like view of a cell array's items in MATLAB linear
    (column-major) order; ``array(key)`` returns a numeric array in MATLAB orientation.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(self.path, "file not found")
        self.version = mat_version(self.path)
        self._h5 = None
        self._cache: dict[str, Any] = {}  # v4/v5: all variables
        if self.version == "7.3":
            import h5py

            try:
                self._h5 = h5py.File(self.path, "r")
            except OSError as exc:
                raise DataError(self.path, f"unreadable MATLAB v7.3 (HDF5) file ({exc})") from None
            self._keys = [k for k in self._h5.keys() if not k.startswith("#")]
        else:
            # v4/v5 files cannot be read piecewise: load every variable in one pass
            # (whosmat + per-variable loadmat calls would inflate the file several times).
            from scipy.io import loadmat

            try:
                data = loadmat(str(self.path), squeeze_me=False, chars_as_strings=True)
            except Exception as exc:  # scipy raises several types for corrupt files
                raise DataError(self.path, f"unreadable MATLAB file ({exc})") from None
            self._cache = {k: v for k, v in data.items() if not k.startswith("__")}
            self._keys = list(self._cache)

    # -------------------------------------------------------------- context manager
    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self._cache.clear()

    def __enter__(self) -> "MatFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- variables
    def keys(self) -> list[str]:
        return list(self._keys)

    def __contains__(self, key: str) -> bool:
        return key in self._keys

    def require(self, *keys: str) -> None:
        """Raise a DataError naming the file and every expected variable that is missing."""
        missing = [k for k in keys if k not in self._keys]
        if missing:
            raise DataError(self.path, f"missing variable(s) {', '.join(map(repr, missing))} "
                                       f"(file has: {', '.join(self._keys) or 'none'})")

    def _v5(self, key: str) -> np.ndarray:
        return self._cache[key]

    def cell(self, key: str) -> "CellView":
        """Items of the cell array ``key`` (column-major order), resolved on access."""
        self.require(key)
        if self._h5 is not None:
            node = self._h5[key]
            if _matlab_class(node) != "cell":
                raise DataError(self.path, f"variable {key!r} is not a cell array "
                                           f"(MATLAB class {_matlab_class(node)!r})")
            refs = np.asarray(node[()]).T  # back to MATLAB orientation
            return CellView(self, key, refs.shape, refs.ravel(order="F"), h5=True)
        value = self._v5(key)
        if value.dtype != object:
            raise DataError(self.path, f"variable {key!r} is not a cell array "
                                       f"(got a {value.dtype} array of shape {value.shape})")
        return CellView(self, key, value.shape, value.ravel(order="F"), h5=False)

    def array(self, key: str) -> np.ndarray:
        """Numeric/logical/char variable ``key`` in MATLAB orientation."""
        self.require(key)
        if self._h5 is not None:
            return h5_to_numpy(self._h5[key], self._h5, self.path)
        return self._v5(key)

    def resolve(self, item: Any) -> Any:
        """A raw cell item (h5py reference or scipy value) -> numpy array / object array."""
        if self._h5 is None:
            return item
        return h5_to_numpy(self._h5[item], self._h5, self.path)


class CellView(Sequence):
    """Read-only, lazily converted items of one cell array."""

    def __init__(self, mat: MatFile, key: str, shape: tuple[int, ...], items: np.ndarray, h5: bool):
        self.mat, self.key, self.shape, self._items, self._h5 = mat, key, tuple(shape), items, h5

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        return self.mat.resolve(self._items[index])

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self[i]


def _matlab_class(node) -> str:
    cls = node.attrs.get("MATLAB_class", b"")
    return cls.decode("ascii") if isinstance(cls, bytes) else str(cls)


def h5_to_numpy(node, h5file, path: Path) -> Any:
    """One v7.3 variable (dataset or struct group) -> the value ``scipy.io.loadmat`` would give.

    Cell arrays become object arrays whose items are converted recursively, numeric and
    logical arrays are transposed back to MATLAB orientation, char arrays become ``str``
    and structs become ``dict``.
    """
    import h5py

    if isinstance(node, h5py.Group):  # struct (scalar): one member per field
        return {name: h5_to_numpy(node[name], h5file, path) for name in node.keys()}
    cls = _matlab_class(node)
    if node.attrs.get("MATLAB_empty", 0):
        # Empty arrays store their MATLAB size vector as data.
        dims = tuple(int(d) for d in np.asarray(node[()]).ravel())
        return np.zeros(dims if dims else (0, 0), dtype=object if cls == "cell" else float)
    data = np.asarray(node[()])
    if cls == "cell" or data.dtype == h5py.ref_dtype:
        refs = data.T
        out = np.empty(refs.shape, dtype=object)
        for idx in np.ndindex(refs.shape):
            out[idx] = h5_to_numpy(h5file[refs[idx]], h5file, path)
        return out
    if cls == "char":
        return "".join(chr(c) for c in data.T.ravel(order="F"))
    if cls == "logical":
        return data.T.astype(bool)
    if data.dtype.kind not in "biuf":
        raise DataError(path, f"unsupported MATLAB v7.3 variable {node.name!r} "
                              f"(class {cls!r}, dtype {data.dtype})")
    return data.T


def load_mat(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, Any]:
    """Eagerly load the named variables (cells as object arrays); missing keys -> DataError."""
    with MatFile(path) as mat:
        mat.require(*keys)
        out = {}
        for key in keys:
            if mat._h5 is not None:
                out[key] = h5_to_numpy(mat._h5[key], mat._h5, mat.path)
            else:
                out[key] = mat._v5(key)
        return out


def save_mat_v73(path: str | os.PathLike, variables: dict[str, Any]) -> None:
    """Write variables as MATLAB v7.3 stores them (HDF5 + 512-byte "MATLAB 7.3" userblock).

    Supports numeric/bool arrays and (nested) object arrays as cell arrays; arrays are
    transposed into HDF5 order and cell items live in ``#refs#``. Used by the test
    fixtures and by anyone who needs to produce v7.3 files without MATLAB.
    """
    import h5py

    from overlapseg.utils.io import atomic_path

    path = Path(path)
    counter = [0]

    def ref_name() -> str:
        # MATLAB names the #refs# members a, b, ..., z, ba, bb, ... (base-26 letters).
        n, s = counter[0], ""
        counter[0] += 1
        while True:
            s = chr(ord("a") + n % 26) + s
            n //= 26
            if n == 0:
                return s

    def put(group, name: str, value) -> Any:
        value = np.asarray(value) if not isinstance(value, np.ndarray) else value
        if value.dtype == object:
            refs = np.empty(value.shape, dtype=h5py.ref_dtype)
            for idx in np.ndindex(value.shape):
                child = put(f["#refs#"], ref_name(), value[idx])
                refs[idx] = child.ref
            ds = group.create_dataset(name, data=refs.T)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            return ds
        if value.ndim < 2:
            value = value.reshape(1, -1) if value.ndim == 1 else value.reshape(1, 1)
        cls = {"b": "logical", "u": f"uint{8 * value.dtype.itemsize}",
               "i": f"int{8 * value.dtype.itemsize}", "f": "double" if value.dtype.itemsize == 8
               else "single"}[value.dtype.kind]
        data = value.astype(np.uint8) if value.dtype == bool else value
        ds = group.create_dataset(name, data=data.T, compression="gzip")
        ds.attrs["MATLAB_class"] = np.bytes_(cls)
        if cls == "logical":
            ds.attrs["MATLAB_int_decode"] = np.int32(1)
        return ds

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", userblock_size=512) as f:
            f.create_group("#refs#")
            for key, value in variables.items():
                put(f, key, value)
        text = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Jan  1 00:00:00 1970 "
                b"HDF5 schema 1.00 .").ljust(116, b" ")
        header = text + b"\x00" * 8 + b"\x00\x02" + b"IM"
        with open(tmp, "r+b") as f:
            f.write(header.ljust(512, b"\x00"))

"""Artifacts: JSON and HDF5 files with a schema and provenance, written atomically (`fgar_cli.files`).

Every HDF5 artifact carries root attributes `schema`, `schema_version`, `created_by` (fgar
version), `git_hash`, `config` (JSON of the resolved config) and `inputs` (JSON mapping each
input file to its sha256). An HDF5 file is built in memory and written with one atomic write, so a
crash or a full disk never leaves a half-written artifact under the final name. Checkpoints are
`fgar_cli.checkpoints`.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fgar_cli import __version__
from fgar_cli.distributed import after_write
from fgar_cli.errors import FgarError
from fgar_cli.files import atomic_path, atomic_write_bytes, os_error

# --------------------------------------------------------------------------- atomic writes


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=_json_default) + "\n")
    after_write(path)  # under torchrun: rank 0 wrote it, and every rank may read it from here on


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- provenance


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise os_error(path, exc, "cannot read") from None
    return h.hexdigest()


def git_hash() -> str:
    """The git commit of the fgar source tree, or '' when it is not a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance(config: Mapping[str, Any] | None, inputs: list[str | Path] | None = None) -> dict[str, str]:
    """Attributes stored with every artifact: version, git hash, resolved config, input hashes."""
    hashes = {str(p): sha256_file(p) for p in (inputs or []) if Path(p).is_file()}
    return {
        "created_by": f"fgar {__version__}",
        "git_hash": git_hash(),
        "config": json.dumps(dict(config or {}), default=_json_default, sort_keys=True),
        "inputs": json.dumps(hashes, sort_keys=True),
    }


# --------------------------------------------------------------------------- HDF5


def write_h5(
    path: str | Path,
    schema: str,
    version: int,
    datasets: Mapping[str, Any],
    attrs: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    inputs: list[str | Path] | None = None,
) -> None:
    """Write an HDF5 artifact atomically. Strings (and lists of str) become UTF-8 string datasets."""
    import h5py

    buffer = io.BytesIO()  # built in memory: HDF5 itself never writes to the disk (see fgar_cli.files)
    with h5py.File(buffer, "w") as f:
        f.attrs["schema"] = schema
        f.attrs["schema_version"] = version
        for key, value in provenance(config, inputs).items():
            f.attrs[key] = value
        for key, value in (attrs or {}).items():
            f.attrs[key] = json.dumps(value) if isinstance(value, (dict, list)) else value
        for name, data in datasets.items():
            arr = _to_numpy(data)
            if arr.dtype.kind in "UO":
                f.create_dataset(name, data=arr.astype(object), dtype=h5py.string_dtype("utf-8"))
            else:
                f.create_dataset(name, data=arr)
    atomic_write_bytes(path, buffer.getvalue())
    after_write(path)


def _to_numpy(data: Any) -> np.ndarray:
    if hasattr(data, "detach"):  # torch tensor
        return data.detach().cpu().numpy()
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], str):
        return np.array(data, dtype=object)
    return np.asarray(data)


def read_h5(
    path: str | Path,
    schema: str,
    version: int,
    required: Mapping[str, tuple[int, str]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read an HDF5 artifact and check its schema, version and datasets.

    `required` maps dataset name to (ndim, dtype kind) with kind one of 'f' (float), 'i' (int,
    unsigned accepted), 'b' (bool), 'S' (string). Returns (datasets, attrs) with strings decoded.
    """
    import h5py

    p = Path(path)
    if not p.is_file():
        raise FgarError(f"{p}: {'is a folder, not a file' if p.is_dir() else 'file not found'}")
    try:
        f = h5py.File(p, "r")
    except OSError:
        try:
            p.open("rb").close()
        except OSError as exc:
            raise os_error(p, exc, "cannot read") from None
        raise FgarError(f"{p}: not a readable HDF5 file") from None
    with f:
        found = _attr_str(f.attrs.get("schema"))
        if found != schema:
            raise FgarError(f"{p}: expected an HDF5 artifact of schema '{schema}', found '{found or 'none'}'")
        found_version = int(f.attrs.get("schema_version", -1))
        if found_version != version:
            raise FgarError(f"{p}: {schema} schema_version {found_version} is not supported (expected {version})")
        data: dict[str, np.ndarray] = {}
        for name in f.keys():
            ds = f[name]
            if h5py.check_string_dtype(ds.dtype) is not None:
                data[name] = np.array([s.decode("utf-8") if isinstance(s, bytes) else s for s in ds[()]])
            else:
                data[name] = ds[()]
        attrs = {k: _attr_str(v) if isinstance(v, bytes) else v for k, v in f.attrs.items()}
    for name, (ndim, kind) in (required or {}).items():
        if name not in data:
            raise FgarError(f"{p}: dataset '{name}' is missing")
        arr = data[name]
        if arr.ndim != ndim:
            raise FgarError(f"{p}: dataset '{name}' has {arr.ndim} dimensions, expected {ndim}")
        if not _kind_ok(arr, kind):
            raise FgarError(f"{p}: dataset '{name}' has dtype {arr.dtype}, expected {_KIND_NAMES[kind]}")
    return data, attrs


_KIND_NAMES = {"f": "float", "i": "integer", "b": "bool", "S": "string"}


def _kind_ok(arr: np.ndarray, kind: str) -> bool:
    if kind == "S":
        return arr.dtype.kind in "USO"
    if kind == "i":
        return arr.dtype.kind in "iu"
    return arr.dtype.kind == kind


def _attr_str(value: Any) -> str:
    if value is None:
        return ""
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def atomic_copy(src: str | Path, dst: str | Path) -> None:
    """Copy a file so that `dst` is either the old file or the complete new one."""
    with atomic_path(dst) as tmp:
        try:
            shutil.copyfile(src, tmp)
        except OSError as exc:
            if not Path(src).is_file():
                raise os_error(src, exc, "cannot read") from None
            raise
    after_write(dst)

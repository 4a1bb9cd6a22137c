"""The file-system boundary: every read and write of fgar goes through here or reports like it does.

* An `OSError` (permission denied, read-only file system, no space left, is or is not a folder)
  becomes one `FgarError` line that names the path and the reason (`os_error`).
* Writes are atomic: the bytes go to a temporary file beside the target, are flushed to the disk
  (fsync) and renamed onto it, so a crash, a kill or a full disk never leaves a half-written file
  under the final name; a failed or interrupted write removes its temporary file, and
  `sweep_stale_temporaries` removes those of processes that were killed. New files get the user's
  umask (like any file a program creates), not mkstemp's 0600.
* Large binary formats (torch checkpoints, HDF5) are serialised in memory first and written with one
  plain `write`: neither library then touches the disk itself, so a full disk is an ordinary
  `OSError` here instead of a library's cryptic error (torch: "unexpected pos"; HDF5 once crashed).
* `check_writable_folder` probes an output folder before long work starts.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from fgar_cli.distributed import is_main
from fgar_cli.errors import FgarError

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, not a file",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
}
_TMP_SUFFIX = ".tmp"
# Folders whose first write runs a callback first (`claim_on_first_write`): a fresh run into a used
# folder clears the previous run's files only once its own first file is complete.
_claims: dict[Path, Callable[[], None]] = {}


def os_error(path: str | Path, exc: OSError, doing: str = "cannot write") -> FgarError:
    """One line for an OSError: `PATH: cannot write (read-only file system)`."""
    reason = _REASONS.get(exc.errno or -1) or exc.strerror or type(exc).__name__
    return FgarError(f"{path}: {doing} ({reason})")


def make_folder(folder: Path) -> None:
    """Create `folder` and its parents; a file in the way or a read-only disk is a clear error."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise FgarError(f"{folder}: cannot create the folder (a file of that name is in the way)") from None
    except OSError as exc:
        raise os_error(folder, exc, "cannot create the folder") from None
    if not folder.is_dir():
        raise FgarError(f"{folder}: cannot create the folder (a file of that name is in the way)")


def check_output_file(path: str | Path) -> Path:
    """A path that a file will be written to: not a folder, and its folder can be made and written."""
    p = Path(path)
    if p.is_dir():
        raise FgarError(f"{p}: is a folder; give the name of the file to write")
    check_writable_folder(p.parent)
    return p


def check_writable_folder(folder: str | Path) -> Path:
    """Make `folder` if needed and prove that a file can be created in it, before long work starts."""
    f = Path(folder)
    if f.exists() and not f.is_dir():
        raise FgarError(f"{f}: is a file; give a folder to write into")
    make_folder(f)
    probe = f / f".fgar-probe.{os.getpid()}{_TMP_SUFFIX}"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise os_error(f, exc, "cannot write into the folder") from None
    sweep_stale_temporaries(f)
    return f


def _temporary_name(final: Path) -> Path:
    # The pid lets a later run tell a temporary of a killed process from one still being written.
    return final.with_name(f".{final.name}.{os.getpid()}.{secrets.token_hex(4)}{_TMP_SUFFIX}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_temporaries(folder: Path) -> int:
    """Remove the temporary files that killed fgar processes left in `folder`; returns how many."""
    removed = 0
    with contextlib.suppress(OSError):
        for tmp in folder.glob(f".*{_TMP_SUFFIX}"):
            parts = tmp.name[: -len(_TMP_SUFFIX)].rsplit(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or _pid_alive(int(parts[1])):
                continue
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def _fsync_folder(folder: Path) -> None:
    # Makes the rename durable; some file systems cannot open a folder for this, which is harmless.
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path, every_rank: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path` for a writer that needs a file name (an image, a video);
    on success it is flushed and renamed onto `path`, on any failure or interruption removed.

    Under torchrun only rank 0 writes (`fgar_cli.distributed`): the others get a scratch file that is
    thrown away, unless `every_rank` (a cache each process fills with its own entries)."""
    final = Path(path)
    if final.is_dir():
        raise FgarError(f"{final}: is a folder; give the name of the file to write")
    if not every_rank and not is_main():
        with tempfile.TemporaryDirectory(prefix="fgar-rank-") as scratch:
            discarded = Path(scratch) / final.name
            discarded.touch()  # writers open the temporary file, as they do beside `path`
            yield discarded
        return
    make_folder(final.parent)
    tmp = _temporary_name(final)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _run_claims(final)
        make_folder(final.parent)
        os.replace(tmp, final)
    except OSError as exc:
        raise os_error(final, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_folder(final.parent)


def claim_on_first_write(folder: Path, claim: Callable[[], None]) -> None:
    """Run `claim` once, when the first file written anywhere under `folder` is complete and about to
    be renamed into place."""
    _claims[folder.resolve()] = claim


def _run_claims(final: Path) -> None:
    if not _claims:
        return
    target = final.resolve()
    for folder in [f for f in _claims if f in target.parents]:
        _claims.pop(folder)()


def remove_keeping_temporaries(path: Path) -> None:
    """Delete a file, or a folder and all it holds, except temporary files being written (a folder
    that still holds one stays)."""
    if not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return
    for below in sorted(path.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if below.is_dir():
            with contextlib.suppress(OSError):
                below.rmdir()
        elif not below.name.endswith(_TMP_SUFFIX):
            below.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def read_bytes(path: str | Path, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a file (the first `limit` of them); a missing file, a folder or an unreadable
    file is one clear line."""
    p = Path(path)
    if p.is_dir():
        raise FgarError(f"{p}: is a folder, not a {what}")
    if not p.exists():
        raise FgarError(f"{p}: {what} not found")
    try:
        with open(p, "rb") as f:
            return f.read() if limit is None else f.read(limit)
    except OSError as exc:
        raise os_error(p, exc, f"cannot read the {what}") from None


def read_text(path: str | Path, what: str = "file") -> str:
    """A UTF-8 text file; a file in another encoding is one clear line."""
    try:
        return read_bytes(path, what).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FgarError(f"{path}: not a UTF-8 text file (byte {exc.start} cannot be decoded)") from None

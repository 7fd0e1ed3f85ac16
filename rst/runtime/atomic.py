"""Atomic writes of the files a user keeps: a reader sees the old file or the new one, never half.

Every file written for a user (mask and weights files, ``log.json``, the zoo's ``index.json``,
checkpoints) goes through :func:`atomic_write`:

* the data goes to a temporary file in the target's folder whose name is unique per writer
  (``.NAME.PID.RANDOM.tmp``: two concurrent saves of one path never share a temporary file);
* the temporary file is flushed and ``fsync``-ed, then renamed over the target (``os.replace``),
  and the folder is ``fsync``-ed so that the rename survives a crash;
* on any failure the temporary file is removed and the target is left as it was;
* a full disk (``ENOSPC``, ``EDQUOT``) becomes :class:`NoSpaceError`: "no space left on FOLDER".

    >>> atomic_write("runs/a/log.json", json.dumps(log))                 # str or bytes
    >>> atomic_write("runs/a/checkpoint.pt", lambda f: torch.save(state, f))   # or a writer(f)

:func:`ensure_writable_dir` checks an output folder before a long run starts (create it, write and
remove a probe file) so that an unwritable ``--out`` is refused at once, not after hours.
"""
from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Union

Writer = Union[bytes, bytearray, memoryview, str, Callable[[BinaryIO], object]]

_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class OutputError(OSError):
    """An output file or folder that cannot be written; ``str()`` is one line naming it."""

    def __str__(self) -> str:
        return str(self.strerror)


class NoSpaceError(OutputError):
    """The disk (or quota) is full: "no space left on FOLDER"."""


def _no_space(folder: Path, path: Path) -> NoSpaceError:
    return NoSpaceError(errno.ENOSPC, f"no space left on {folder} (while writing {path.name}); "
                                      "free some space or choose another output folder")


def is_no_space(e: BaseException) -> bool:
    """Whether ``e`` (or an error it wraps: torch.save wraps the OSError of a failed write) is a full disk."""
    seen = 0
    while e is not None and seen < 16:
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            return True
        if isinstance(e, RuntimeError) and "No space left on device" in str(e):
            return True
        e, seen = e.__cause__ or e.__context__, seen + 1
    return False


def temp_name(path: Path) -> Path:
    """A temporary name beside ``path``, unique per process and call."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return                                   # e.g. a platform without directory handles
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, writer: Writer) -> Path:
    """Write ``path`` atomically: ``writer`` is bytes / str (UTF-8) or a callable given the open binary file.

    Raises :class:`NoSpaceError` on a full disk and :class:`OutputError` when the folder cannot be
    written; the temporary file never survives a failure. Returns ``path``.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise OutputError(errno.EISDIR, f"cannot write {path}: it is a folder; give a file name")
    tmp = temp_name(path)
    try:
        try:
            f = open(tmp, "xb")
        except FileNotFoundError:
            raise OutputError(errno.ENOENT, f"cannot write {path}: the folder {folder} does not exist") from None
        except (PermissionError, IsADirectoryError, NotADirectoryError) as e:
            raise OutputError(e.errno, f"cannot write to {folder}: {e.strerror.lower()}") from None
        with f:
            if callable(writer):
                writer(f)
            else:
                f.write(writer.encode() if isinstance(writer, str) else writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            tmp.unlink()
        except OSError:
            pass
        if not isinstance(e, OutputError) and is_no_space(e):
            raise _no_space(folder, path) from None
        raise
    _fsync_dir(folder)
    return path


def ensure_writable_dir(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (with parents) and prove it writable with a probe file; :class:`OutputError` if not."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(errno.ENOTDIR, f"output folder {folder} is a file, not a folder") from None
    except OSError as e:
        raise OutputError(e.errno, f"cannot create output folder {folder}: {(e.strerror or str(e)).lower()}") from None
    if not folder.is_dir():
        raise OutputError(errno.ENOTDIR, f"output folder {folder} is not a folder")
    probe = temp_name(folder / "write-probe")
    try:
        with open(probe, "xb") as f:
            f.write(b"rst")
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        if e.errno in _NO_SPACE:
            raise _no_space(folder, probe) from None
        raise OutputError(e.errno, f"output folder {folder} is not writable: {(e.strerror or str(e)).lower()}") from None
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
    return folder

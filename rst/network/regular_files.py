"""Reading a path that may be hostile: a regular file only, never more bytes than its ``stat`` gave.

A FIFO, a device, a directory, a socket or a file of /proc or /sys is refused before it is opened
(reading one could block forever or never end), and a file swapped, truncated or grown while it is
read is refused too. Each refusal is a one-line :class:`rst.network.mask_errors.MaskFileError`.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from .mask_errors import MaskFileError

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
_KERNEL_DIRS = ("/proc", "/sys")     # their "regular" files report a size (often 0) that is not their content
CHUNK = 1 << 20


def _kind(mode: int) -> str:
    """What a non-regular file of ``mode`` is, in words."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _not_regular(path: Path, what: str) -> MaskFileError:
    """The refusal of ``path``, which is ``what`` (naming a symlink's target)."""
    target = os.path.realpath(path)
    via = f", via a symlink to {target}" if os.path.islink(path) else ""
    return MaskFileError(f"not a regular file: {path} ({what}{via})")


def regular_file_stat(path: Path, max_bytes: int) -> os.stat_result:
    """``os.stat`` of ``path`` after resolving symlinks; refuses anything but a regular file within
    ``max_bytes`` (a FIFO, a device, a directory, a socket, a file of /proc or /sys)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MaskFileError(f"no mask file at {path}" + (" (a symlink to a missing file)"
                                                         if os.path.islink(path) else "")) from None
    except OSError as e:
        raise MaskFileError(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, _kind(st.st_mode))
    real = os.path.realpath(path)
    if any(real == d or real.startswith(d + "/") for d in _KERNEL_DIRS):
        raise _not_regular(path, f"a kernel pseudo-file under /{real.split('/')[1]}")
    if st.st_size > max_bytes:
        raise MaskFileError(f"{path.name} is {st.st_size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB "
                            "limit for mask files")
    return st


def read_regular_file(path: str | os.PathLike, max_bytes: int) -> bytes:
    """The bytes of a regular file, never more than the size ``os.stat`` gave; :class:`MaskFileError`
    for a path that is not a regular file, is over ``max_bytes``, or changes while it is read."""
    path = Path(path)
    st = regular_file_stat(path, max_bytes)
    try:                                         # O_NONBLOCK: a FIFO swapped in after the stat cannot block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise MaskFileError(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    try:
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise _not_regular(path, "replaced while it was opened")
        chunks, got = [], 0
        while got < st.st_size:
            chunk = os.read(fd, min(CHUNK, st.st_size - got))
            if not chunk:
                raise MaskFileError(f"{path.name} was truncated while it was read: {got} of its {st.st_size} bytes")
            chunks.append(chunk)
            got += len(chunk)
        if os.read(fd, 1) or os.fstat(fd).st_size != st.st_size:
            raise MaskFileError(f"{path.name} changed size while it was read (it had {st.st_size} bytes)")
    except OSError as e:
        raise MaskFileError(f"cannot read {path}: {(e.strerror or str(e)).lower()}") from None
    finally:
        os.close(fd)
    return b"".join(chunks)

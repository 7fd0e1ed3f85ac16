"""One writer per output folder: a lock file holding the writer's PID.

Two searches writing one ``--out`` would interleave checkpoints and tickets without a word. A run
takes ``OUT/.rst.lock`` first:

* the lock is an exclusive ``flock`` on that file, which records ``pid host time`` for the message;
  the kernel releases it when the process ends, however it ends;
* a second writer is refused with one line naming the holder's PID (:class:`RunLockError`);
* a stale lock file (its writer died, ``kill -9`` included) holds no ``flock`` any more and is simply
  taken over: the file's recorded PID is then replaced by ours;
* on exit the lock file is removed.

    >>> with run_lock("runs/fmnist-k0.1"):
    ...     run_search(cfg, workdir="runs/fmnist-k0.1")

POSIX only (``fcntl``): on other platforms the lock is created exclusively and a recorded PID that
is no longer alive counts as stale.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:            # pragma: no cover - Windows
    fcntl = None

LOCK_NAME = ".rst.lock"


class RunLockError(RuntimeError):
    """Another live run holds the output folder's lock; the message names its PID and the lock file."""


def _holder(path: Path) -> str:
    try:
        text = path.read_text().split()
    except OSError:
        return "another process"
    return f"PID {text[0]}" if text and text[0].isdigit() else "another process"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _refuse(folder: Path, path: Path) -> RunLockError:
    return RunLockError(f"{folder} is in use by another run ({_holder(path)}, lock file {path}); "
                        "wait for it to finish or choose another output folder")


def _acquire_flock(folder: Path, path: Path) -> int:
    for _ in range(8):
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _refuse(folder, path) from None
        except BaseException:
            os.close(fd)
            raise
        try:                                      # the holder may have removed the file meanwhile
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)
    raise _refuse(folder, path)


def _acquire_exclusive(folder: Path, path: Path) -> int:     # pragma: no cover - no fcntl
    for _ in range(8):
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            text = _holder(path)
            pid = int(text.split()[1]) if text.startswith("PID ") else None
            if pid is not None and _pid_alive(pid):
                raise _refuse(folder, path) from None
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    raise _refuse(folder, path)


@contextlib.contextmanager
def run_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold ``folder``'s run lock inside the block (the folder must exist); yields the lock file's path.

    Raises :class:`RunLockError` when another live process holds it; a stale lock is recovered.
    """
    folder = Path(folder)
    path = folder / LOCK_NAME
    fd = _acquire_flock(folder, path) if fcntl is not None else _acquire_exclusive(folder, path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        os.fsync(fd)
        yield path
    finally:
        with contextlib.suppress(OSError):
            path.unlink()                         # before unlocking: a waiter re-checks the inode
        os.close(fd)

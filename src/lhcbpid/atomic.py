"""Outputs are never half-written: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from lhcbpid.errors import InputError

#: errno values that mean "this place cannot take the output" (full, read-only, not allowed), not a bug.
_WRITE_FAILURES = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                   errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG}


def _cannot_write(path: Path, e: OSError) -> InputError:
    """One line for an output that cannot be written: the target (never the temporary name), the reason, the fix."""
    reason = e.strerror or str(e).strip().splitlines()[0]
    return InputError(f"cannot write {path} ({reason}); free some space, fix the permissions of {path.parent} "
                      f"or choose another output location")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success rename it to `path`, on any error delete it.

    A full disk, a read-only or unwritable directory (while creating, writing or renaming) becomes an InputError
    naming `path`; nothing is left behind.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _cannot_write(path, e) from None
    os.close(fd)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
        yield Path(tmp)
        os.replace(tmp, path)
    except OSError as e:
        if e.errno in _WRITE_FAILURES:
            raise _cannot_write(path, e) from None
        raise
    finally:
        with suppress(OSError):  # never hide the real error behind a failed clean-up
            Path(tmp).unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes | str) -> None:
    """Write bytes or text to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def check_writable(folder: Path) -> None:
    """Fail now, not after an hour of work, if `folder` cannot take outputs."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        reason = e.strerror or str(e).strip().splitlines()[0]
        raise InputError(f"cannot write to {folder} ({reason}); fix its permissions, free some space "
                         f"or choose another output folder") from None

"""Owner-only files and directories: what Hurricane writes is for its own user.

The data directory holds every message body, returned message and address
(the SQLite store), the VERP signing keys, the SSH host key of the admin
console, the followers' cursors and by default the accounting log. None of
it is for other local users, so:

- a directory Hurricane creates is 0700, a file it creates is 0600, whatever
  the process umask (the mode is given to ``mkdir``/``open`` themselves, so
  there is no moment when the file exists with a wider mode);
- an existing one with group or other bits (an older Hurricane, a
  ``cp -r``, a umask of 022) is tightened at start-up by clearing those bits,
  and a warning says so. Modes are only ever narrowed: an owner bit is never
  added, a 0500 directory stays 0500.

Only the data directory itself and files Hurricane owns are tightened: a
directory elsewhere that merely holds a configured file (``/etc/hurricane``,
``/var/log/hurricane``) is created 0700 when missing but otherwise left to
the operator.
"""

from __future__ import annotations

import os
import stat

from twisted.logger import Logger

__all__ = [
    "PRIVATE_DIR_MODE",
    "PRIVATE_FILE_MODE",
    "create_private_file",
    "ensure_private_dir",
    "is_inside",
    "make_dirs",
    "tighten",
]

log = Logger()

#: Mode of a directory Hurricane creates.
PRIVATE_DIR_MODE = 0o700
#: Mode of a file Hurricane creates.
PRIVATE_FILE_MODE = 0o600
#: The bits no file or directory of Hurricane's keeps: group and other.
_SHARED_BITS = 0o077


def tighten(path: str) -> int | None:
    """Clear the group and other bits of ``path`` when it has any (never loosens).

    Args:
        path: a file or directory; a missing one is left alone.

    Returns:
        The mode it had when it was changed, else None.

    Raises:
        OSError: the mode could not be read or changed (not the owner...).
    """
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None
    if not mode & _SHARED_BITS:
        return None
    os.chmod(path, mode & ~_SHARED_BITS)
    log.warn("{path} was open to other users (mode {old:04o}); made it {new:04o}",
             path=path, old=mode, new=mode & ~_SHARED_BITS)
    return mode


def make_dirs(path: str) -> None:
    """Create ``path`` and any missing parent with mode 0700; existing ones keep theirs.

    ``os.makedirs(mode=...)`` applies the mode to the last directory only, and
    a parent created for us is ours too: each missing level gets 0700.
    """
    path = os.path.abspath(path)
    if os.path.isdir(path):
        return
    parent = os.path.dirname(path)
    if parent != path:
        make_dirs(parent)
    try:
        os.mkdir(path, PRIVATE_DIR_MODE)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


def ensure_private_dir(path: str) -> None:
    """Create ``path`` 0700, or tighten it (with a warning) when it exists wider.

    Args:
        path: a directory that is Hurricane's own (the data directory,
            ``cursors/``).

    Raises:
        OSError: it cannot be created or its mode cannot be changed.
    """
    make_dirs(path)
    tighten(path)


def create_private_file(path: str) -> None:
    """Create ``path`` empty with mode 0600 when missing; tighten it when it exists.

    SQLite then opens a file that was never readable by others, and gives
    its ``-wal`` and ``-shm`` files the mode of the database file.

    Raises:
        OSError: it cannot be created or its mode cannot be changed.
    """
    make_dirs(os.path.dirname(os.path.abspath(path)))
    try:
        # O_EXCL: an existing file (a database) is never opened for writing
        # here, only its mode is looked at.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        tighten(path)
    else:
        os.close(fd)


def is_inside(path: str, directory: str) -> bool:
    """Whether ``path`` is ``directory`` or below it (after making both absolute)."""
    path = os.path.abspath(path)
    directory = os.path.abspath(directory)
    return os.path.commonpath([path, directory]) == directory

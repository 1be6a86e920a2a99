"""The one home of atomic file writes: every file modalrec writes goes through here.

A write goes to a temporary file in the target's folder (so the final rename stays on one file system), is
flushed and fsynced, given the permissions an ordinary ``open(path, "w")`` would give (``0666 & ~umask``; a
plain ``mkstemp`` file would be ``0600``), and renamed over the target with ``os.replace``. A failure or a kill
at any moment leaves either the previous file or the new one, never a truncated mix; the temporary file is
removed on any Python-level failure (a SIGKILL can leave a ``.<name>.XXXX`` file, which is never read).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from modalrec.errors import ModalrecError


def default_mode(directory: bool = False) -> int:
    """The permission bits a plain ``open``/``mkdir`` gives under the current umask (0644/0755 at umask 022)."""
    mask = os.umask(0)
    os.umask(mask)
    return (0o777 if directory else 0o666) & ~mask


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``, on failure removed.

    For writers that need a file name rather than a handle (matplotlib's ``savefig``, ``np.savez``). ``suffix``
    keeps an extension such writers look at (e.g. ``".png"``).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, default_mode())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(file_handle)`` on a temporary binary file next to ``path`` and rename it into place."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 text atomically."""
    data = text.encode("utf-8")
    atomic_write_bytes(path, lambda fh: fh.write(data))


@contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` (removed first when it exists).

    The caller checks whether replacing an existing ``path`` is allowed; ``overwrite=False`` refuses to remove a
    non-empty folder here as a last guard. On failure the temporary folder is removed and ``path`` is unchanged.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, default_mode(directory=True))
        if target.is_dir() and not target.is_symlink():
            if any(target.iterdir()) and not overwrite:
                raise FileExistsError(f"{target} exists and is not empty")
            # Move the old folder aside first so that a failure before the rename keeps it.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old / "x", target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_output_path(path: str | os.PathLike[str], folder: bool = False) -> None:
    """Refuse an output path that cannot be written: an existing file where a folder goes (or the reverse), or a
    path under an existing file. Raises ``ModalrecError`` naming the path."""
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise ModalrecError(f"{target}: exists and is not a folder; choose another output path")
    if not folder and target.is_dir():
        raise ModalrecError(f"{target}: is a folder; give a file path")
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ModalrecError(f"{target}: {parent} is a file, so nothing can be written under it")
            break

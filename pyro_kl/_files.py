"""Files written atomically: to a temporary name beside the target, then renamed."""

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(filename: str) -> Iterator[str]:
    """Yields a temporary path beside ``filename``; renamed onto it on success.

    On any error the temporary is removed and an existing ``filename`` is
    left as it was, never emptied or truncated. A symbolic link ``filename``
    is written through: its target is replaced and the link kept.

    :param str filename: the file to write.
    :raises FileNotFoundError: if the folder does not exist.
    :raises IsADirectoryError: if ``filename`` is a folder.
    :raises OSError: if the folder cannot be written.

    Example::

        with atomic_path("w.svg") as temporary:
            with open(temporary, "wb") as f:
                f.write(b"<svg/>")
    """
    filename = os.fspath(filename)
    if os.path.islink(filename):
        filename = os.path.realpath(filename)
    folder, name = os.path.split(os.path.abspath(filename))
    if not os.path.isdir(folder):
        raise FileNotFoundError(
            f"Cannot write {filename!r}: the folder {folder!r} does not exist. Create it "
            "first (os.makedirs(folder, exist_ok=True)) or write the file elsewhere."
        )
    if os.path.isdir(filename):
        raise IsADirectoryError(
            f"Cannot write {filename!r}: it is a folder. Give a file name inside it, "
            f"e.g. {os.path.join(filename, 'worlds.svg')!r}."
        )
    handle, temporary = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(handle)
    try:
        if os.path.exists(filename):
            shutil.copymode(filename, temporary)
        else:
            os.chmod(temporary, 0o666 & ~_umask())
        yield temporary
        os.replace(temporary, filename)
    except BaseException:
        try:
            os.remove(temporary)
        except FileNotFoundError:
            pass
        raise

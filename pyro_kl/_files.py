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

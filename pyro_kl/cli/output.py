"""Output folders for the command-line applications: checked first, published whole.

An application writes into a fresh hidden folder beside ``out`` and, only when
everything is written, renames it to ``out``. An interrupted run leaves ``out``
as it was; a finished run never mixes its files with an earlier run's.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator


class OutputFolderError(Exception):
    """The output folder cannot be used; the message says why and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_output_folder(out: str, *, owns: Callable[[str], bool]) -> None:
    """Checks, before any work, that ``out`` can be (re)written.

    ``out`` may be missing, an empty folder, or a folder holding only files
    that ``owns`` recognises as this application's own (an earlier run's);
    its parent folder must be writable.

    :param str out: the output folder.
    :param owns: ``owns(file_name)`` is true for a name the application writes.
    :raises OutputFolderError: with a one-line reason and the fix.
    """
    if os.path.lexists(out) and not os.path.isdir(out):
        raise OutputFolderError(f"--out {out!r} is an existing file; give a folder path.")
    if os.path.isdir(out):
        foreign = sorted(name for name in os.listdir(out) if not owns(name))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise OutputFolderError(
                f"--out {out!r} holds files this command does not write ({shown}); "
                "give a new or empty folder, so that nothing of yours is replaced."
            )
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise OutputFolderError(f"--out {out!r}: {parent!r} is a file, not a folder.")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as error:
            raise OutputFolderError(
                f"--out {out!r}: cannot create {parent!r} ({error.strerror}); "
                "choose a folder you can write to."
            ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(
            f"--out {out!r}: the folder {parent!r} is not writable; choose one you can write to."
        )


@contextmanager
def staged_output_folder(out: str, *, owns: Callable[[str], bool]) -> Iterator[str]:
    """Yields a fresh folder to write into, published as ``out`` on success.

    The folder is made at once (so an unwritable place fails before any
    work) beside ``out``, on the same file system. On success an earlier
    ``out`` is replaced as a whole; on any error or interruption the staging
    folder is removed and ``out`` is left as it was.

    :param str out: the output folder.
    :param owns: see :func:`check_output_folder`.
    :raises OutputFolderError: if ``out`` cannot be used.

    Example::

        with staged_output_folder("results", owns=lambda name: name == "a.txt") as staging:
            with open(os.path.join(staging, "a.txt"), "w") as f:
                f.write("done")
    """
    check_output_folder(out, owns=owns)
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    except OSError as error:
        raise OutputFolderError(
            f"--out {out!r}: cannot write in {parent!r} ({error.strerror}); "
            "choose a folder you can write to."
        ) from None
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _publish(staging, out)


def _publish(staging: str, out: str) -> None:
    """Renames ``staging`` to ``out``, replacing an earlier ``out`` as a whole."""
    if not os.path.isdir(out):
        os.rename(staging, out)
        return
    parent, name = os.path.split(out)
    previous = tempfile.mkdtemp(prefix=f".{name}.", suffix=".previous", dir=parent)
    os.rmdir(previous)
    os.rename(out, previous)
    try:
        os.rename(staging, out)
    except BaseException:
        os.rename(previous, out)
        shutil.rmtree(staging, ignore_errors=True)
        raise
    shutil.rmtree(previous, ignore_errors=True)

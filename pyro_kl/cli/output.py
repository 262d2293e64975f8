"""Output folders for the command-line applications: checked first, published whole.

An application writes into a fresh hidden folder beside ``out`` and, only when
everything is written, renames it to ``out``. An interrupted run leaves ``out``
as it was; a finished run never mixes its files with an earlier run's.

What is never touched: anything the application did not write. Before any
work :func:`check_output_folder` refuses

- an empty ``--out ""``, and the current folder or a folder above it
  (``.``, ``..``, ``/``): publishing renames the whole folder;
- an existing file, or a path whose trailing ``/`` names a file
  (``results.txt/``);
- a folder holding anything the application does not write (a file of
  another name, or a sub-folder, even one with an owned name);
- a symbolic link that is dangling or points at something other than a folder.

**Symbolic links are written through.** ``--out latest`` where ``latest``
links to an earlier run's folder replaces *that folder* (the same checks
apply to it) and leaves the link as it was, pointing where it did.

Every path is written by renaming a finished temporary beside it (see
:func:`pyro_kl._files.atomic_path`), so a reader sees the old content or the new, never a
part.
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Callable, Iterator

from .._files import atomic_path  # noqa: F401  (re-exported)


class OutputFolderError(Exception):
    """The output folder cannot be used; the message says why and what to do."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _strip_separators(out: str) -> str:
    """``out`` without trailing separators (``"results/" -> "results"``), ``"/"`` kept."""
    stripped = out.rstrip(os.sep + (os.altsep or ""))
    return stripped or out[:1]


def resolve_output_folder(out: str) -> str:
    """The absolute folder that publishing ``out`` replaces: ``out`` itself,
    or the folder a symbolic link ``out`` points at.

    :param str out: the output folder as given on the command line.
    :returns: an absolute path.
    :raises OutputFolderError: for an empty name, a link that is dangling or
        does not point at a folder, or a path ending in ``/`` that names a file.
    """
    if not isinstance(out, (str, os.PathLike)) or not os.fspath(out):
        raise OutputFolderError(
            "--out is empty; name the folder to write, e.g. --out results."
        )
    given = os.fspath(out)
    path = _strip_separators(given)
    if os.path.islink(path):
        target = os.path.realpath(path)
        if not os.path.exists(target):
            raise OutputFolderError(
                f"--out {given!r} is a symbolic link to {target!r}, which does not exist; "
                "create that folder, or give another --out."
            )
        if not os.path.isdir(target):
            raise OutputFolderError(
                f"--out {given!r} is a symbolic link to the file {target!r}; "
                "give a folder path."
            )
        return target
    if os.path.lexists(path) and not os.path.isdir(path):
        raise OutputFolderError(f"--out {given!r} is an existing file; give a folder path.")
    return os.path.abspath(path)


def _check_not_above_cwd(given: str, target: str) -> None:
    here = os.path.realpath(os.getcwd())
    real = os.path.realpath(target)
    if here == real or here.startswith(real.rstrip(os.sep) + os.sep):
        what = "the current folder" if here == real else "a folder holding the current folder"
        raise OutputFolderError(
            f"--out {given!r} is {what}, which publishing would replace as a whole; "
            "give a new folder's name, e.g. --out results."
        )


def _check_contents(given: str, target: str, owns: Callable[[str], bool]) -> None:
    names = sorted(os.listdir(target))
    foreign = [
        name for name in names
        if not owns(name) or (os.path.isdir(os.path.join(target, name))
                              and not os.path.islink(os.path.join(target, name)))
    ]
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise OutputFolderError(
            f"--out {given!r} holds files this command does not write ({shown}); "
            "give a new or empty folder, so that nothing of yours is replaced."
        )


def check_output_folder(out: str, *, owns: Callable[[str], bool]) -> str:
    """Checks, before any work, that ``out`` can be (re)written.

    ``out`` may be missing, an empty folder, a folder holding only files
    that ``owns`` recognises as this application's own (an earlier run's), or
    a symbolic link to such a folder; its parent folder must be writable.

    :param str out: the output folder.
    :param owns: ``owns(file_name)`` is true for a name the application writes.
    :returns: the absolute folder that will be (re)placed (a link's target).
    :raises OutputFolderError: with a one-line reason and the fix.

    Example::

        check_output_folder("results", owns={"summary.json"}.__contains__)
    """
    target = resolve_output_folder(out)
    given = os.fspath(out)
    _check_not_above_cwd(given, target)
    if os.path.isdir(target):
        _check_contents(given, target, owns)
    parent = os.path.dirname(target)
    if not os.path.isdir(parent):
        if os.path.lexists(parent):
            raise OutputFolderError(f"--out {given!r}: {parent!r} is a file, not a folder.")
        try:
            os.makedirs(parent, exist_ok=True)
        except OSError as error:
            raise OutputFolderError(
                f"--out {given!r}: cannot create {parent!r} ({error.strerror}); "
                "choose a folder you can write to."
            ) from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputFolderError(
            f"--out {given!r}: the folder {parent!r} is not writable; choose one you can write to."
        )
    return target


@contextmanager
def staged_output_folder(out: str, *, owns: Callable[[str], bool]) -> Iterator[str]:
    """Yields a fresh folder to write into, published as ``out`` on success.

    The folder is made at once (so an unwritable place fails before any
    work) beside ``out`` (beside a symbolic link's target), on the same file
    system. On success an earlier ``out`` is replaced as a whole; on any error
    or interruption the staging folder is removed and ``out`` is left as it
    was. The contents of ``out`` are checked again just before publishing; if
    something not this application's appeared meanwhile, nothing is replaced
    and the error names the staging folder holding the results.

    :param str out: the output folder.
    :param owns: see :func:`check_output_folder`.
    :raises OutputFolderError: if ``out`` cannot be used.

    Example::

        with staged_output_folder("results", owns=lambda name: name == "a.txt") as staging:
            with open(os.path.join(staging, "a.txt"), "w") as f:
                f.write("done")
    """
    target = check_output_folder(out, owns=owns)
    parent, name = os.path.split(target)
    try:
        staging = tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=parent)
    except OSError as error:
        raise OutputFolderError(
            f"--out {os.fspath(out)!r}: cannot write in {parent!r} ({error.strerror}); "
            "choose a folder you can write to."
        ) from None
    try:
        os.chmod(staging, 0o777 & ~_umask())
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        if check_output_folder(out, owns=owns) != target:
            raise OutputFolderError(f"--out {os.fspath(out)!r} now points elsewhere")
    except OutputFolderError as error:
        raise OutputFolderError(
            f"{error} (changed during the run); nothing was replaced, the results are "
            f"in {staging!r}."
        ) from None
    _publish(staging, target)


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

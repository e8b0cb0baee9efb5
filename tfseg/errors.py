"""The one base class of tfseg's expected errors.

Every error that a user can cause and mend (a missing file, a wrong flag value, a damaged
run folder) derives from :class:`TfsegError`; its message names the file or argument and
says what to do. The command line (``tfseg.cli``) prints it on one line and exits with 2;
anything else is a bug and keeps its traceback.
"""


class TfsegError(Exception):
    """An error the user can act on; the message says which file or argument, and what to do."""


def is_disk_full(err: BaseException) -> bool:
    """An OSError with ENOSPC, or a TensorFlow error that wraps one (its message says so)."""
    import errno

    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return True
    # TensorFlow's file writers raise ResourceExhaustedError / an OpError whose text carries the OS message.
    return type(err).__module__.startswith("tensorflow") and "No space left on device" in str(err)


def disk_full_file(err: BaseException) -> str | None:
    """The file a full disk stopped: an OSError's filename, else the path in a TensorFlow error's message,
    which reads ``{{function_node ...}} /run/x.bin; No space left on device [Op:WriteFile]``; None if unknown."""
    import re

    name = getattr(err, "filename", None)
    if name:
        return str(name)
    found = re.search(r"([^\s;{}][^;{}]*); No space left on device", str(err))
    return found.group(1).strip() if found else None


def disk_full_message(err: BaseException, then: str = "run the same command again") -> str:
    """One line for a full disk: which file, that what was there before is kept, and what to do ``then``."""
    name = disk_full_file(err)
    where = f"writing {name}" if name else f"({str(err).splitlines()[0][:200]})"
    return (f"the disk is full {where}: nothing was half-written (tfseg writes to a temporary name, then renames), "
            f"so the previous files are kept; free some space and {then}")

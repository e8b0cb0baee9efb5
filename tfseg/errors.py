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


def disk_full_message(err: BaseException) -> str:
    """One line for a full disk: which file, and that what was there before is kept."""
    name = getattr(err, "filename", None)
    where = f"writing {name}" if name else f"({str(err).splitlines()[0][:200]})"
    return (f"the disk is full {where}: nothing was half-written (tfseg writes to a temporary name, then renames), "
            "so the previous files are kept; free some space and run the same command again")

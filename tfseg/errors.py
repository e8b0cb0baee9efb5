"""The one base class of tfseg's expected errors.

Every error that a user can cause and mend (a missing file, a wrong flag value, a damaged
run folder) derives from :class:`TfsegError`; its message names the file or argument and
says what to do. The command line (``tfseg.cli``) prints it on one line and exits with 2;
anything else is a bug and keeps its traceback.
"""


class TfsegError(Exception):
    """An error the user can act on; the message says which file or argument, and what to do."""

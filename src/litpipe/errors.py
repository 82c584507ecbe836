"""The one base class of every error a user is expected to hit.

A stage (or ``litpipe`` command) that fails with a :class:`LitpipeError` prints its message
as one paragraph and exits with status 2; anything else is a bug and keeps its traceback.
Each concern defines its own subclass beside the code that raises it (``DownloadError`` in
``litpipe.data.download``, ``TrackingError`` in ``litpipe.tracking``, ...), so the runner
needs to know only this class.
"""


class LitpipeError(Exception):
    """An expected failure whose message is the whole story: what failed, and what to do."""


class MissingInputError(LitpipeError):
    """A file a stage reads is absent: an earlier stage has not run (or its output was lost)."""

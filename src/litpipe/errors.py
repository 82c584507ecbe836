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


class InputFileError(LitpipeError, ValueError):
    """A file handed to litpipe (an image, an exported model, its model.json) cannot be
    used; the message names it and says what is wrong."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    """``exc`` as one short line: libraries' messages can span lines and paragraphs."""
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:limit]

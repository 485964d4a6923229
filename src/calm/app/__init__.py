"""``calm app``: build and try a few-shot classifier in a local web page, offline.

:class:`AppSession` is the library side (classes of clips, fit, classify, save, load);
:func:`make_server` serves the page and its JSON API with the standard library.
"""

from calm.app.server import make_server
from calm.app.session import AppSession, BusyError, FitResult, Progress, StoppedError

__all__ = ["AppSession", "BusyError", "FitResult", "Progress", "StoppedError", "make_server"]

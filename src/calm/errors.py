"""The errors calm raises for things a user can fix: one hierarchy, one line each on the command line.

Every user-facing error derives from :class:`CalmError`, so one ``except CalmError`` catches them
all, and a ``KeyError`` or ``TypeError`` from a bug stays a traceback. Each subclass also keeps
the builtin base it had before (``ValueError`` for bad input, ``RuntimeError`` for a state that
cannot be used), so existing ``except ValueError`` code keeps working. The concrete classes live
with the code that raises them (``MediaLoadError`` in :mod:`calm.media`, ``DatasetError`` in
:mod:`calm.data.loaders`, ``StoreError`` in :mod:`calm.store`, ...).
"""

from __future__ import annotations


class CalmError(Exception):
    """A problem with an input, a file, an argument or the environment, named in its message."""


class InputError(CalmError, ValueError):
    """Bad input: a file, a dataset, an argument or a saved object that cannot be used as given."""


class FingerprintError(InputError):
    """Features from another backbone, backbone options or prompt than the ones expected."""


class MissingDependencyError(CalmError, ImportError):
    """An optional package a feature needs is not installed; the message gives the install command."""

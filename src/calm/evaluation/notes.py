"""The notes of an evaluation: the warnings its fits raised, one line per kind of warning.

A 1-shot run fits every method on every seed, and most of them warn alike (every class has a
single support item ...): the same sentence from each method and seed. A kind of warning is its
text with the estimator's name, numbers and quoted values set aside; its line is the first such
message, with how many fits raised it, which methods and which shot counts. Values are written
plainly (``'clap'``, not numpy's ``np.str_('clap')``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_ESTIMATOR = re.compile(r"^(?:Calibrated\()?[A-Z]\w*\)?: ")
_NUMPY_SCALAR = re.compile(r"\bnp\.\w+\(([^()]*)\)")
_VARIABLE = re.compile(r"'[^']*'|\d+(?:\.\d+)?")


def plain(text: str) -> str:
    """``text`` with numpy scalar reprs written as their values (``np.str_('a')`` -> ``'a'``)."""
    return _NUMPY_SCALAR.sub(r"\1", text)


@dataclass
class _Kind:
    text: str
    first: str
    count: int = 0
    methods: list[str] = field(default_factory=list)
    shots: list[int] = field(default_factory=list)


class Notes:
    """Notes in order of first appearance: plain notes once each, fit warnings grouped by kind."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str | None, int | None]] = []

    def add(self, message: str, method: str | None = None, shots: int | None = None) -> None:
        """One warning; ``method`` and ``shots`` say which fit raised it (None: the run as a whole)."""
        self.entries.append((str(message), method, shots))

    def extend(self, other: Notes) -> None:
        """Add ``other``'s warnings after these (an episode run elsewhere)."""
        self.entries.extend(other.entries)

    def lines(self) -> list[str]:
        """One line per note: a single fit's warning as ``method (K-shot): text`` (as raised), a
        repeated one as ``text (N fits: methods; K-shot)``."""
        kinds: dict[str, _Kind] = {}
        for message, method, shots in self.entries:
            text = plain(message)
            if method is None:
                kinds.setdefault(f"plain:{text}", _Kind(text, text))
                continue
            body = _ESTIMATOR.sub("", text)
            kind = kinds.setdefault(_VARIABLE.sub("#", body), _Kind(body, text))
            kind.count += 1
            if method not in kind.methods:
                kind.methods.append(method)
            if shots is not None and shots not in kind.shots:
                kind.shots.append(shots)
        out = []
        for kind in kinds.values():
            where = ", ".join(str(k) for k in sorted(kind.shots))
            if not kind.methods:
                out.append(kind.text)
            elif kind.count == 1:
                out.append(f"{kind.methods[0]} ({where}-shot): {kind.first}")
            else:
                out.append(f"{kind.text} ({kind.count} fits: {', '.join(kind.methods)}; {where}-shot)")
        return out

"""Which requests the server of ``calm app`` answers: a defence against other sites and DNS rebinding.

A page of another site can make the browser send requests to ``http://127.0.0.1:7860``, and with
DNS rebinding (a name of the attacker's that first resolves to the attacker's server, then to
127.0.0.1) even read the answers, since the browser takes them for the attacker's own origin. Two
checks close this, as development servers do (webpack's ``allowedHosts``, Jupyter's
``allow_origin``):

* **Host**: on a loopback address, only requests whose ``Host`` header names the bound address
  (``127.0.0.1:PORT``, ``[::1]:PORT``) or ``localhost:PORT`` are answered; a rebound name is not.
  On any other address (``--host 0.0.0.0``) the page is open to the network anyway (it has no
  authentication) and any ``Host`` is answered.
* **Origin**: a request that changes something (any method but GET and HEAD) whose ``Origin``
  (or, without it, ``Referer``) names another origin than the app's own is refused.

What the page may make the app read on this machine is bounded too: a path it names must lie
under the app's ``--root`` (:func:`path_under_root`).
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse

SAFE_METHODS = ("GET", "HEAD")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """The ``Host`` header values a server bound to ``host:port`` answers (lower case), or None
    (any) when it is not bound to a loopback address."""
    if not is_loopback(host):
        return None
    names = {"localhost", f"[{host}]" if ":" in host else host}
    return frozenset({f"{name}:{port}" for name in names} | (names if port == 80 else set()))


def refusal(method: str, headers: Mapping[str, str], allowed: frozenset[str] | None) -> str | None:
    """Why a request is refused (the text of a 403 answer), or None if it is served."""
    host = (headers.get("Host") or "").strip().lower()[:100]
    if allowed is not None and host not in allowed:
        return (f"refused: Host {host or '(none)'!r} is not this app's address; "
                f"open http://{sorted(allowed)[0]}/ instead\n")
    if method in SAFE_METHODS:
        return None
    sender = headers.get("Origin") or _origin_of(headers.get("Referer"))
    if sender and sender.strip().lower() != f"http://{host}":
        return f"refused: a request from {sender.strip()[:100]!r}, another site than this app\n"
    return None


def _origin_of(url: str | None) -> str | None:
    """``scheme://host[:port]`` of a URL (a ``Referer``), or None if there is none."""
    if not url:
        return None
    parts = urlparse(url.strip())
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme else url


def content_length(value: str | None, limit: int) -> int:
    """The body length a ``Content-Length`` header declares (0 when absent); ValueError for a
    negative or non-integer value or one above ``limit``."""
    if value is None or not value.strip():
        return 0
    if not re.fullmatch(r"\d{1,20}", value.strip()):
        raise ValueError(f"bad Content-Length {value.strip()[:30]!r}: expected a number of bytes")
    length = int(value)
    if length > limit:
        raise ValueError(f"upload too large: {length} bytes (at most {limit})")
    return length


def inside(path: Path, root: Path) -> bool:
    """Whether ``path`` (symbolic links resolved) is ``root`` (resolved) or lies below it."""
    return path.resolve().is_relative_to(root)


def path_under_root(root: Path, spec: str, name: str | None = None) -> Path:
    """``spec`` (a path relative to ``root``, or absolute) resolved; ValueError, naming ``name`` (by
    default ``spec``) and nothing of the file, for a path outside ``root`` (symbolic links resolved: checked before
    whether it exists, so the answer tells nothing of the rest of the machine) or one that does not
    exist."""
    name = spec if name is None else name
    path = (root / Path(spec.strip()).expanduser()).resolve()
    if not inside(path, root):
        raise ValueError(f"{name}: outside {root}, the folder the app may read "
                         "(start calm app with --root to choose another)")
    if not path.exists():
        raise ValueError(f"{name}: no such folder or file under {root}")
    return path

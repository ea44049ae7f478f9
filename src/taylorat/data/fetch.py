"""Downloads that never hang and never print a traceback: a quick reachability probe, then the download
under a socket timeout with the downloader's chatter on stdout swallowed.

A dataset's loader calls :func:`try_download` with a function that downloads (a torchvision constructor
with ``download=True``) and the URLs it will fetch; it gets ``(result, None)`` or ``(None, reason)``.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

__all__ = ["DOWNLOAD_SOCKET_TIMEOUT_S", "PROBE_TIMEOUT_S", "reachable", "socket_timeout", "try_download"]

PROBE_TIMEOUT_S = 3.0
DOWNLOAD_SOCKET_TIMEOUT_S = 60.0


def reachable(urls: Sequence[str], timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to any of ``urls``' hosts opens within ``timeout``.

    Runs in a daemon thread so that a stalled DNS lookup cannot hang the caller.
    """
    targets = []
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            targets.append((parts.hostname, port))
    if not targets:
        return False
    ok = threading.Event()

    def probe() -> None:
        for host, port in targets:
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    ok.set()
                    return
            except OSError:
                continue

    t = threading.Thread(target=probe, name="taylorat-net-probe", daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return ok.is_set()


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Set the process-wide default socket timeout for the duration of the block, then restore it."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def try_download(fetch: Callable[[], Any], urls: Sequence[str]) -> tuple[Any, str | None]:
    """Run ``fetch()`` (a torchvision constructor with download=True) if one of ``urls`` is reachable.

    Returns ``(result, None)`` or ``(None, reason)``; never raises for network trouble and never
    prints a traceback. torchvision's own chatter on stdout (e.g. "Failed to download (trying
    next)") is swallowed; its progress bar on stderr is left alone.
    """
    if not reachable(urls):
        return None, "no network"
    sink = io.StringIO()
    try:
        with socket_timeout(DOWNLOAD_SOCKET_TIMEOUT_S), contextlib.redirect_stdout(sink):
            return fetch(), None
    except Exception as e:  # noqa: BLE001 - any download failure means "not available"
        msg = str(e).strip().splitlines()
        return None, (msg[0] if msg else type(e).__name__)

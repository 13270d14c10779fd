"""Request guards for the web app: who may post (Host / Origin checks) and how many uploads run at once.

- Host allow-list: Starlette's ``TrustedHostMiddleware`` (400 for any other Host header), which also defeats DNS
  rebinding. Default: ``localhost``, ``127.0.0.1`` and ``[::1]``.
- Cross-origin POSTs: a state-changing request whose ``Origin`` is neither the server's own (same host and port as
  the Host header) nor in ``allowed_origins`` is refused with 403 before its body is read; so is one a browser
  marks ``Sec-Fetch-Site: cross-site`` without an Origin. Clients that send neither (curl, scripts) pass.
- Admission: at most ``workers`` uploads are decoded / predicted / explained at once; at most ``queue`` more
  wait, holding their request bodies, whose declared sizes together stay under ``body_budget`` bytes. Beyond
  that, or after waiting ``timeout_s``, the answer is 503 with a ``Retry-After`` estimated from recent service
  times. Memory is then bounded by ``body_budget`` (x2 while a body is being joined) plus ``workers`` x (one
  decode at the pixel limit + one request's heatmaps).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

DEFAULT_ALLOWED_HOSTS = ("localhost", "127.0.0.1", "[::1]")
# The server's limits (create_app and `chestdx serve` share them; this module imports no web framework)
DEFAULT_MAX_UPLOAD = 32 * 1024 * 1024
DEFAULT_MAX_HEATMAPS = 4
DEFAULT_MAX_WORKERS = 2
DEFAULT_MAX_QUEUE = 64
DEFAULT_BODY_BUDGET = 256 * 1024 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Busy(Exception):
    """No capacity: answer 503 with ``Retry-After: retry_after`` seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def normalize_origin(origin: str) -> str | None:
    """``scheme://host[:port]`` lower-cased with default ports dropped; ``None`` for "null" or junk."""
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host = parts.hostname.lower()
    host = f"[{host}]" if ":" in host else host
    default = 80 if parts.scheme == "http" else 443
    return f"{parts.scheme}://{host}" + (f":{port}" if port and port != default else "")


def _netloc(origin: str) -> str:
    """``host[:port]`` of a normalized origin, with the scheme's default port written out."""
    scheme, rest = origin.split("://", 1)
    return rest if ":" in rest.rsplit("]", 1)[-1] else f"{rest}:{80 if scheme == 'http' else 443}"


def origin_allowed(origin: str | None, host: str | None, allowed: Sequence[str], fetch_site: str | None,
                   scheme: str = "http") -> tuple[bool, str]:
    """Whether a state-changing request may proceed, and why not (for the 403 message)."""
    if origin is None:
        if (fetch_site or "").lower() == "cross-site":
            return False, "cross-site request (Sec-Fetch-Site: cross-site) refused"
        return True, ""
    norm = normalize_origin(origin)
    if norm is None:
        return False, f"request from origin {origin[:80]!r} refused"
    if norm in {normalize_origin(a) for a in allowed}:
        return True, ""
    if host:
        own = normalize_origin(f"{scheme}://{host}")
        if own is not None and _netloc(norm) == _netloc(own):
            return True, ""
    return False, (f"cross-origin request from {norm} refused: only pages served by this server may post "
                   "(allow other origins with --allow-origin)")


class Admission:
    """Bounded work queue for uploads (asyncio side; the work itself runs in threads)."""

    def __init__(self, workers: int = 2, queue: int = 64, timeout_s: float = 60.0, body_budget: int = 256 << 20):
        if workers < 1 or queue < 0 or body_budget < 1:
            raise ValueError(f"need workers >= 1, queue >= 0, body_budget >= 1 (got {workers}, {queue}, {body_budget})")
        self.workers, self.queue, self.timeout_s = int(workers), int(queue), float(timeout_s)
        self.body_budget = int(body_budget)
        self.inflight = 0  # admitted: waiting + running
        self.pending_bytes = 0  # declared body sizes of the admitted requests
        self._sem: asyncio.Semaphore | None = None
        self._service_s = 1.0  # moving average of one upload's service time (for Retry-After)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the queue ahead, served ``workers`` at a time."""
        waves = max(1, math.ceil(self.inflight / self.workers))
        return max(1, min(120, math.ceil(waves * self._service_s)))

    def admit(self, nbytes: int) -> None:
        """Count one request of ``nbytes`` body in, or raise :class:`Busy` when the requests or their bodies are at
        capacity (no await: check and increment cannot interleave with another request's). A first request is
        always admitted whatever its size (the upload limit bounds it)."""
        if self.inflight >= self.workers + self.queue:
            raise Busy(f"server busy: {self.inflight} uploads running or waiting; retry later", self.retry_after())
        if self.inflight and self.pending_bytes + nbytes > self.body_budget:
            raise Busy(f"server busy: {self.pending_bytes >> 20} MiB of uploads waiting; retry later",
                       self.retry_after())
        self.inflight += 1
        self.pending_bytes += nbytes

    def release(self, nbytes: int) -> None:
        self.inflight -= 1
        self.pending_bytes -= nbytes

    @asynccontextmanager
    async def slot(self):
        """Wait (at most ``timeout_s``) for one of the ``workers`` slots; :class:`Busy` on timeout."""
        if self._sem is None:  # created lazily inside the server's event loop
            self._sem = asyncio.Semaphore(self.workers)
        try:
            await asyncio.wait_for(self._sem.acquire(), timeout=self.timeout_s)
        except asyncio.TimeoutError as exc:
            raise Busy(f"server busy: no worker free within {self.timeout_s:.0f} s; retry later",
                       self.retry_after()) from exc
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sem.release()
            self._service_s = 0.8 * self._service_s + 0.2 * (time.perf_counter() - start)

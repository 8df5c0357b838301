"""Hot reload: watch `servers.yaml` (and listen for SIGHUP), and hand each valid new version to the master.

An invalid file changes nothing: the error is logged and the running config stays.
"""

from __future__ import annotations

import hashlib
import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import anyio

from master_mcp.config import ConfigError, MasterConfig
from master_mcp.server import MasterServer

logger = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0


def _fingerprint(path: Path) -> bytes | None:
    try:
        return hashlib.sha256(path.read_bytes()).digest()
    except OSError:
        return None  # being replaced (editors write a new file and rename it): look again next time


class ConfigWatcher:
    def __init__(
        self,
        master: MasterServer,
        path: Path,
        load: Callable[[], MasterConfig],
        *,
        poll: bool = True,
        interval_s: float = WATCH_INTERVAL_S,
        on_applied: Callable[[], None] | None = None,
    ) -> None:
        self._master = master
        self._on_applied = on_applied
        self._path = path
        self._load = load
        self._poll = poll
        self._interval = interval_s
        self._seen = _fingerprint(path)
        self._lock = anyio.Lock()

    async def run(self) -> None:
        async with anyio.create_task_group() as tg:
            if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
                tg.start_soon(self._on_sighup)
            while self._poll:
                await anyio.sleep(self._interval)
                current = _fingerprint(self._path)
                if current is not None and current != self._seen:
                    self._seen = current
                    await self.reload("the file changed")

    async def _on_sighup(self) -> None:
        with anyio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                self._seen = _fingerprint(self._path)
                await self.reload("SIGHUP")

    async def reload(self, why: str) -> bool:
        """Load the file and apply it; False (and the running config kept) when it is not valid."""
        async with self._lock:
            logger.info("reloading %s (%s)", self._path, why)
            try:
                config = self._load()
                await self._master.reload(config)
            except ConfigError as exc:
                logger.error("config reload rejected, keeping the running config: %s", exc)
                self._master.metrics.reloads.labels("rejected").inc()
                return False
            except Exception as exc:  # e.g. a token store file that cannot be opened: the master keeps serving
                logger.error("config reload failed, keeping the running config: %s: %s", type(exc).__name__, exc)
                self._master.metrics.reloads.labels("rejected").inc()
                return False
            self._master.metrics.reloads.labels("applied").inc()
            if self._on_applied is not None:
                self._on_applied()
            return True

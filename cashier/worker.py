"""The cashier's background work: deliver hospital notifications and sweep silent or expired
orders. ``serve`` runs it in every server worker (unless ``EHC_RUN_WORKER=0``);
``python -m openplatform worker`` runs it alone. Any number may run at once: notifications
are claimed with leases, sweeps take a shared lock.
"""

from __future__ import annotations

import asyncio
import logging
import secrets

import aiohttp

from cardcore import outbound
from cardcore.runtime import Runtime
from cashier import notifier, sweeper

log = logging.getLogger("ehc.cashier.worker")


class Worker:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.owner = secrets.token_hex(8)
        self._http: aiohttp.ClientSession | None = None  # opened in run(), on the running loop
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        self._http = notifier.delivery_session(self.rt.settings.provider_timeout_s)
        log.info("cashier worker started", extra={"worker": self.owner})
        try:
            await asyncio.gather(self._deliver_forever(), self._sweep_forever())
        finally:
            await self._http.close()

    def stop(self) -> None:
        self._stopping.set()
        notifier.wake()

    async def _deliver_forever(self) -> None:
        await notifier.deliver_continuously(
            self.rt, self._http, self.owner, self._stopping, self.rt.settings.worker_poll_ms / 1000
        )

    async def _sweep_forever(self) -> None:
        interval_s = self.rt.settings.sweep_interval_s
        while not self._stopping.is_set():
            try:
                await sweeper.sweep(self.rt)
            except Exception:
                log.exception("sweep failed")
            try:
                await asyncio.wait_for(self._stopping.wait(), interval_s)
            except asyncio.TimeoutError:
                pass


async def run_standalone(rt: Runtime) -> None:
    """``python -m openplatform worker``: until SIGINT or SIGTERM."""
    import signal

    worker = Worker(rt)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stop)
    try:
        await worker.run()
    finally:
        await outbound.close_shared_session()  # the sweeper's calls to the channels went through it

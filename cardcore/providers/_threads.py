"""Run the synchronous SDKs (wechatpy, python-alipay-sdk) off the event loop, bounded.

Every blocking provider call goes through ``run_sync``: a worker thread via
``asyncio.to_thread``, at most ``MAX_CONCURRENT_SDK_CALLS`` at once per event loop, so a
slow provider cannot take every thread of the default executor.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

MAX_CONCURRENT_SDK_CALLS = 16

# One semaphore per event loop: an asyncio primitive belongs to the loop that first waits on it.
_semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    semaphore = _semaphores.get(loop)
    if semaphore is None:
        semaphore = _semaphores[loop] = asyncio.Semaphore(MAX_CONCURRENT_SDK_CALLS)
    return semaphore


async def run_sync(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in a worker thread, waiting for a free slot first."""
    async with _semaphore():
        return await asyncio.to_thread(fn, *args, **kwargs)

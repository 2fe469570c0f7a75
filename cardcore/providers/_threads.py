"""Run the synchronous SDKs (wechatpy, python-alipay-sdk) off the event loop, bounded.

Every blocking provider call goes through ``run_sync``: a thread of the SDKs' own pool, at
most ``MAX_CONCURRENT_SDK_CALLS`` at once per event loop. The pool is not the loop's default
executor on purpose: an SDK call waits on an HTTP answer, and when the mock gateways run in
the same process, that answer may itself need a default-executor thread (key loading, bill
zipping). Sharing one pool would let waiting SDK calls hold every thread the answer needs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

MAX_CONCURRENT_SDK_CALLS = 16

# One semaphore per event loop: an asyncio primitive belongs to the loop that first waits on it.
_semaphores: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _semaphore() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    semaphore = _semaphores.get(loop)
    if semaphore is None:
        semaphore = _semaphores[loop] = asyncio.Semaphore(MAX_CONCURRENT_SDK_CALLS)
    return semaphore


def _sdk_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=MAX_CONCURRENT_SDK_CALLS, thread_name_prefix="sdk")
        return _pool


async def run_sync(fn: Callable[..., T], /, *args, **kwargs) -> T:
    """``fn(*args, **kwargs)`` in an SDK thread, waiting for a free slot first."""
    async with _semaphore():
        call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_sdk_pool(), call)

"""Fixed-window counters in the shared cache, for rate limits and lockouts."""

from __future__ import annotations

from cardcore.errors import RateLimited


async def count_hit(redis, key: str, window_s: int) -> int:
    """Count one event in the current window and return the count so far."""
    pipe = redis.pipeline(transaction=True)
    pipe.incr(key)
    pipe.expire(key, window_s, nx=True)
    count, _ = await pipe.execute()
    return int(count)


async def enforce(redis, key: str, limit: int, window_s: int, message: str | None = None) -> None:
    """Refuse with RATE_LIMITED once ``limit`` events happened within the window."""
    if await count_hit(redis, f"rl:{key}", window_s) > limit:
        raise RateLimited(message)

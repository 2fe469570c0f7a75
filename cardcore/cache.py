"""The shared cache: Redis in production, in-process fakeredis as the embedded default.

One-time codes, nonces, rate limits and lockouts live here, so every worker on every
host sees the same state. fakeredis is only correct for a single process.
"""

from __future__ import annotations

import redis.asyncio as redis


def create_redis(redis_url: str) -> redis.Redis:
    if redis_url:
        return redis.from_url(redis_url, decode_responses=False, health_check_interval=30)
    import fakeredis

    return fakeredis.FakeAsyncRedis(decode_responses=False)

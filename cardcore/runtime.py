"""What a running process of the platform holds: settings, key vault, cache and database."""

from __future__ import annotations

from dataclasses import dataclass, field

import redis.asyncio as redis

from cardcore import db
from cardcore.cache import LocalCopies, create_redis
from cardcore.keyvault import KeyVault
from cardcore.settings import Settings


@dataclass
class Runtime:
    settings: Settings
    vault: KeyVault
    redis: redis.Redis
    # This process's decoded copies of stamped records (clients, cards); see cardcore.cache.
    copies: LocalCopies = field(default_factory=LocalCopies)

    @classmethod
    async def start(cls, settings: Settings, apps: dict[str, str] | None = None) -> "Runtime":
        vault = KeyVault.open_for(settings)
        await db.init_db(settings.database_url, apps)
        return cls(settings=settings, vault=vault, redis=create_redis(settings.redis_url))

    async def stop(self) -> None:
        await self.redis.aclose()
        await db.close_db()

"""Redis behind Sentinel: ``EHC_REDIS_URL=redis+sentinel://…`` finds the primary through a
real sentinel (``redis-server --sentinel``) watching the test Redis."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from urllib.parse import urlsplit

import pytest
import redis

from cardcore import cache
from tests.conftest import TEST_REDIS_URL, free_port


def test_sentinel_urls_name_the_sentinels_the_service_and_the_database():
    address = cache.parse_sentinel_url("redis+sentinel://:s%40cret@10.0.0.1:26380,10.0.0.2/ehc-primary/3")
    assert address.sentinels == [("10.0.0.1", 26380), ("10.0.0.2", 26379)]
    assert (address.service, address.db, address.password, address.tls) == ("ehc-primary", 3, "s@cret", False)
    tls = cache.parse_sentinel_url("rediss+sentinel://sentinel.internal/ehc")
    assert (tls.sentinels, tls.db, tls.password, tls.tls) == ([("sentinel.internal", 26379)], 0, None, True)


@pytest.mark.parametrize(
    "url",
    ["redis+sentinel:///ehc", "redis+sentinel://host:26379", "redis+sentinel://host:port/ehc", "redis+sentinel://host/ehc/x", "redis://host/0"],
)
def test_a_sentinel_url_without_sentinels_service_or_a_numeric_db_is_refused(url):
    with pytest.raises(ValueError):
        cache.parse_sentinel_url(url)


@pytest.fixture
def sentinel(tmp_path):
    if not TEST_REDIS_URL or shutil.which("redis-server") is None:
        pytest.skip("needs the test Redis (EHC_TEST_REDIS_URL) and redis-server to run a sentinel")
    primary = urlsplit(TEST_REDIS_URL)
    port = free_port()
    config = tmp_path / "sentinel.conf"  # a sentinel rewrites its configuration file
    config.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor ehc-test {primary.hostname} {primary.port or 6379} 1\n"
    )
    process = subprocess.Popen(
        ["redis-server", str(config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if redis.Redis(port=port).sentinel_get_master_addr_by_name("ehc-test"):
                    break
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the sentinel did not start")
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_the_shared_cache_reaches_the_primary_through_sentinel(sentinel):
    db = int(urlsplit(TEST_REDIS_URL).path.lstrip("/") or 0)
    client = cache.create_redis(f"redis+sentinel://127.0.0.1:{sentinel}/ehc-test/{db}")
    direct = cache.create_redis(TEST_REDIS_URL)
    try:
        await client.set("sentinel-probe", b"through sentinel")
        assert await direct.get("sentinel-probe") == b"through sentinel"
        # The scripts the platform runs, batched in one pipeline, work the same way.
        script = cache.LuaScript("return redis.call('INCR', KEYS[1])")
        await client.delete("sentinel-counter")
        assert sorted(await asyncio.gather(*(script(client, ["sentinel-counter"], []) for _ in range(5)))) == [1, 2, 3, 4, 5]
    finally:
        await direct.delete("sentinel-probe", "sentinel-counter")
        await client.aclose()
        await direct.aclose()

"""Commands packed by hiredis are byte for byte what redis-py would have sent."""

from __future__ import annotations

import pytest
import redis.asyncio as redis
from redis.exceptions import DataError

from cardcore import cache

SAMPLES = [
    ("EVALSHA", "a" * 40, 3, "ehc:card:" + "A" * 64, "ehc:nonce:x", "ehc:code:1", "stamp", 1_700_000_000, b"\x00\xff"),
    ("SET", "姓名", "王芳"),  # UTF-8 text
    ("SET", "k", -12345678901234567890),
    ("SET", "k", b"x" * 10_000),  # redis-py sends large values in chunks
    ("SET", "k", 1.5),  # floats stay with redis-py's formatting
    ("SET", "k", memoryview(b"view")),
    ("SCRIPT LOAD", "return 1"),  # a command name redis-py splits
    ("GET", ""),
]


@pytest.mark.parametrize("args", SAMPLES, ids=range(len(SAMPLES)))
def test_packed_commands_are_what_redis_py_sends(args):
    fast, plain = cache._Connection(), redis.Connection()
    assert b"".join(map(bytes, fast.pack_command(*args))) == b"".join(map(bytes, plain.pack_command(*args)))


def test_arguments_redis_py_refuses_are_still_refused():
    with pytest.raises(DataError):
        cache._Connection().pack_command("SET", "k", True)
    with pytest.raises(DataError):
        cache._Connection().pack_command("SET", "k", None)


def test_the_shared_cache_client_packs_with_hiredis():
    client = cache.create_redis("redis://127.0.0.1:6379/0")
    assert client.connection_pool.connection_class is cache._Connection

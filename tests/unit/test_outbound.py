"""cardcore.outbound against a small HTTP/1.1 server on loopback."""

from __future__ import annotations

import asyncio

import pytest

from cardcore import outbound


class Server(asyncio.Protocol):
    """Answers each request with ``answer``; remembers each request's first line."""

    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\nSUCCESS"
    seen: list[bytes] = []

    def connection_made(self, transport) -> None:
        self.transport, self.buffer = transport, b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end >= 0:
            Server.seen.append(self.buffer.split(b"\r\n", 1)[0])
            self.buffer = b""
            self.transport.write(self.answer)


@pytest.fixture
async def server():
    Server.seen = []
    listening = await asyncio.get_running_loop().create_server(Server, "127.0.0.1", 0)
    yield f"http://127.0.0.1:{listening.sockets[0].getsockname()[1]}"
    listening.close()
    await listening.wait_closed()


async def test_the_url_goes_out_exactly_as_given(server):
    reply = await outbound.fetch(None, "GET", server + "/notify?campus=%E4%B8%9C%E9%99%A2%2F2&a=b%20c")
    assert (reply.status_code, reply.text) == (200, "SUCCESS")
    assert Server.seen == [b"GET /notify?campus=%E4%B8%9C%E9%99%A2%2F2&a=b%20c HTTP/1.1"]


async def test_a_redirect_is_an_answer_and_not_followed(server, monkeypatch):
    monkeypatch.setattr(Server, "answer", f"HTTP/1.1 302 Found\r\nLocation: {server}/elsewhere\r\nContent-Length: 0\r\n\r\n".encode())
    reply = await outbound.fetch(None, "POST", server + "/notify", data=b"{}")
    assert reply.status_code == 302 and reply.headers["location"].endswith("/elsewhere")
    assert Server.seen == [b"POST /notify HTTP/1.1"]


async def test_at_most_read_limit_bytes_of_an_answer_are_read(server, monkeypatch):
    monkeypatch.setattr(Server, "answer", b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100_000)
    session = outbound.new_session(5)
    try:
        reply = await outbound.fetch(session, "POST", server + "/notify", data=b"{}", read_limit=4096)
    finally:
        await session.close()
    assert reply.status_code == 200 and reply.content == b"x" * 4096


@pytest.mark.parametrize("url", ["http://[::1/notify", "not a url", "ftp://127.0.0.1/notify"])
async def test_a_bad_url_is_one_of_the_failures(url):
    with pytest.raises(outbound.FAILURES):
        await outbound.fetch(None, "POST", url, data=b"{}")


async def test_nobody_answering_is_one_of_the_failures(unused_tcp_port):
    with pytest.raises(outbound.FAILURES):
        await outbound.fetch(None, "POST", f"http://127.0.0.1:{unused_tcp_port}/notify", data=b"{}", timeout_s=2)


async def test_one_shared_session_per_event_loop_until_closed():
    first = outbound.shared_session()
    assert outbound.shared_session() is first
    await outbound.close_shared_session()
    assert first.closed and outbound.shared_session() is not first


@pytest.fixture
def proxy_environment(monkeypatch):
    """Proxy variables as the test sets them, read afresh by outbound."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    outbound.proxy_for.cache_clear()
    yield monkeypatch
    outbound.proxy_for.cache_clear()


async def test_calls_go_through_the_proxy_the_environment_names(server, proxy_environment):
    proxy_environment.setenv("HTTP_PROXY", server)  # the loopback server plays the proxy
    reply = await outbound.fetch(None, "POST", "http://his.example.invalid/notify?a=b", data=b"{}")
    assert (reply.status_code, reply.text) == (200, "SUCCESS")
    assert Server.seen == [b"POST http://his.example.invalid/notify?a=b HTTP/1.1"]


@pytest.mark.parametrize("no_proxy", ["localhost,127.0.0.1", "10.0.0.0/8,127.0.0.0/8"])
async def test_hosts_in_no_proxy_are_called_directly(server, proxy_environment, no_proxy):
    proxy_environment.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nobody there
    proxy_environment.setenv("NO_PROXY", no_proxy)
    reply = await outbound.fetch(None, "GET", server + "/notify")
    assert reply.status_code == 200 and Server.seen == [b"GET /notify HTTP/1.1"]


async def test_without_proxy_variables_calls_go_directly(server, proxy_environment):
    reply = await outbound.fetch(None, "GET", server + "/notify")
    assert reply.status_code == 200 and Server.seen == [b"GET /notify HTTP/1.1"]

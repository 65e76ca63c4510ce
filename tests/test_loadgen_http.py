"""The load client's HTTP/1.1 pool against scripted servers on 127.0.0.1: keep-alive reuse,
the connection limit, bodies by length, chunks or close, HEAD, and the three errors."""
from __future__ import annotations

import asyncio
import socket

import pytest
import uvloop

from stack.lab.loadgen_http import (ClosedError, ConnectError, Pool, ProtocolError,
                                    with_body)

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Backend: b1\r\n\r\nhi"


def run(coro):
    return uvloop.run(coro)


async def serve(answer):
    """A server whose `answer(request_bytes, writer)` replies to each request it reads."""
    conns = []

    async def handle(reader, writer):
        conns.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + (await reader.readexactly(length) if length else b"")
                if await answer(request, writer) is False:
                    writer.close()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/predict?x=1", conns


async def reply(data: bytes, close: bool = False):
    async def answer(request, writer):
        writer.write(data)
        await writer.drain()
        return not close
    return answer


def test_keep_alive_reuses_one_connection_and_sends_a_complete_request():
    seen = []

    async def answer(request, writer):
        seen.append(request)
        writer.write(OK)

    async def main():
        server, url, conns = await serve(answer)
        pool = Pool(url, 4)
        head = pool.head("POST", {"Content-Type": "application/json"})
        for _ in range(3):
            resp = await pool.send(with_body(head, b'{"a":1}', b"Idempotency-Key: k\r\n"))
            assert (resp.status, resp.body, resp.headers["x-backend"]) == (200, b"hi", "b1")
        pool.close()
        server.close()
        return len(conns), pool

    n_conns, pool = run(main())
    assert n_conns == 1
    first = seen[0].decode()
    assert first.startswith("POST /predict?x=1 HTTP/1.1\r\n")
    for line in ("Host: 127.0.0.1:", "Content-Type: application/json", "Idempotency-Key: k",
                 "Content-Length: 7", "User-Agent: ", "Accept: */*"):
        assert line in first
    assert first.endswith('\r\n\r\n{"a":1}')


def test_the_limit_makes_requests_wait_for_a_connection():
    async def answer(request, writer):
        await asyncio.sleep(0.05)
        writer.write(OK)

    async def main():
        server, url, conns = await serve(answer)
        pool = Pool(url, 2)
        msg = pool.message("GET")
        answers = await asyncio.gather(*(pool.send(msg) for _ in range(6)))
        opened = pool.connections
        pool.close()
        server.close()
        return answers, len(conns), opened

    answers, n_conns, opened = run(main())
    assert [r.status for r in answers] == [200] * 6
    assert n_conns == 2 and opened == 2


def test_chunked_and_close_delimited_bodies_and_head():
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
    until_close = b"HTTP/1.0 200 OK\r\nX-Backend: b2\r\n\r\nall of it"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"

    async def main():
        out = []
        for data, close, method in ((chunked, False, "GET"), (until_close, True, "GET"),
                                    (head, False, "HEAD")):
            server, url, _ = await serve(await reply(data, close))
            pool = Pool(url, 1)
            resp = await pool.send(pool.message(method), head_only=method == "HEAD")
            out.append((resp.status, resp.body))
            if method == "HEAD":  # the connection is fine for the next request
                out.append(((await pool.send(pool.message(method), head_only=True)).status,))
            pool.close()
            server.close()
        return out

    assert run(main()) == [(200, b"abcde"), (200, b"all of it"), (200, b""), (200,)]


def test_an_interim_response_is_skipped():
    data = b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK

    async def main():
        server, url, _ = await serve(await reply(data))
        pool = Pool(url, 1)
        resp = await pool.send(pool.message("GET"))
        pool.close()
        server.close()
        return resp.status, resp.body

    assert run(main()) == (200, b"hi")


def test_refused_is_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def main():
        pool = Pool(f"http://127.0.0.1:{port}/", 2)
        with pytest.raises(ConnectError):
            await pool.send(pool.message("GET"))
        return pool.connections

    assert run(main()) == 0  # the slot is free again


def test_closed_before_and_during_an_answer():
    async def main():
        server, url, _ = await serve(await reply(b"", close=True))
        pool = Pool(url, 1)
        with pytest.raises(ClosedError) as unanswered:
            await pool.send(pool.message("GET"))
        server.close()
        server, url, _ = await serve(await reply(OK[:-1], close=True))  # one byte short
        pool2 = Pool(url, 1)
        with pytest.raises(ClosedError) as mid:
            await pool2.send(pool2.message("GET"))
        server.close()
        await asyncio.sleep(0)
        return unanswered.value.answered, mid.value.answered, pool.connections

    assert run(main()) == (False, True, 0)


def test_garbage_is_protocol_error():
    async def main():
        server, url, _ = await serve(await reply(b"SMTP ready\r\n\r\n"))
        pool = Pool(url, 1)
        with pytest.raises(ProtocolError):
            await pool.send(pool.message("GET"))
        server.close()

    run(main())


def test_an_abandoned_request_closes_its_connection():
    async def answer(request, writer):
        await asyncio.sleep(0.3)
        writer.write(OK)

    async def main():
        server, url, conns = await serve(answer)
        pool = Pool(url, 1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.send(pool.message("GET"))
        await asyncio.sleep(0.05)
        freed = pool.connections
        resp = await pool.send(pool.message("GET"))  # a new connection, not the late answer
        pool.close()
        server.close()
        return freed, resp.status, len(conns)

    assert run(main()) == (0, 200, 2)


def test_a_waiter_that_gives_up_leaves_the_queue():
    async def answer(request, writer):
        await asyncio.sleep(0.1)
        writer.write(OK)

    async def main():
        server, url, _ = await serve(answer)
        pool = Pool(url, 1)
        first = asyncio.ensure_future(pool.send(pool.message("GET")))
        await asyncio.sleep(0.01)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await pool.send(pool.message("GET"))
        assert (await first).status == 200
        resp = await pool.send(pool.message("GET"))  # the idle connection, reused
        n = pool.connections
        pool.close()
        server.close()
        return resp.status, n

    assert run(main()) == (200, 1)


def test_message_headers_and_bad_input():
    async def main():
        pool = Pool("http://user:pw@example.test:8080/a b", 1)
        msg = pool.message("PUT", {"host": "other", "X-A": "1"}).decode()
        with pytest.raises(ValueError, match="line break"):
            pool.message("GET", {"X-A": "1\r\nX-B: 2"})
        return msg

    msg = run(main())
    assert msg.startswith("PUT /a%20b HTTP/1.1\r\n")
    assert "host: other" in msg and "Host:" not in msg
    assert "Authorization: Basic dXNlcjpwdw==" in msg and "Content-Length: 0" in msg


def test_bad_url_or_limit():
    async def main():
        for url, limit in (("ftp://x/", 1), ("http:///nohost", 1), ("http://x/", 0)):
            with pytest.raises(ValueError):
                Pool(url, limit)

    run(main())


def test_a_fresh_send_opens_a_new_connection_beside_the_idle_one():
    async def main():
        server, url, conns = await serve(await reply(OK))
        pool = Pool(url, 1)
        await pool.send(pool.message("GET"))  # one idle connection now
        resp = await pool.send(pool.message("GET"), fresh=True)  # at the limit: the idle
        await asyncio.sleep(0.05)  # one is closed to make room
        opened = pool.connections
        pool.close()
        server.close()
        await asyncio.sleep(0.05)
        return resp.status, len(conns), opened

    assert run(main()) == (200, 2, 1)

"""serving.start_direct_http, without Ray: what a retriever replica runs to answer its direct port."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import httpx
import pytest
from starlette.responses import JSONResponse

from s3ray import serving
from s3ray.serving import ServeApp, check_direct_port, start_direct_http


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answering(name: str):
    async def handler(request):
        route = request.scope["path"][len(request.scope["root_path"]):]
        return JSONResponse({"server": name, "route": route, "method": request.method})
    return handler


async def get_all(url: str, n: int) -> list[dict]:
    # A client per request: a new connection each time, so the kernel picks a listener each time.
    async def one():
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.get(url)
            return {"status": response.status_code, **response.json()}
    return [await one() for _ in range(n)]


def test_two_servers_share_the_port_and_the_prefix_routes():
    async def scenario():
        port = free_port()
        servers = []
        try:
            for name in "ab":
                servers.append(start_direct_http(answering(name), "127.0.0.1", port, "/retrieve"))
            while not all(s.started for s in servers):
                await asyncio.sleep(0.01)
            below = await get_all(f"http://127.0.0.1:{port}/retrieve/health", 40)
            at = (await get_all(f"http://127.0.0.1:{port}/retrieve", 1))[0]
            outside = (await get_all(f"http://127.0.0.1:{port}/other", 1))[0]
        finally:
            for s in servers:
                s.should_exit = True
            await asyncio.sleep(0.3)
        return below, at, outside

    below, at, outside = asyncio.run(scenario())
    assert {r["route"] for r in below} == {"/health"} and {r["status"] for r in below} == {200}
    # The kernel spreads new connections over both listeners (40 connections all on one: ~1e-12).
    assert {r["server"] for r in below} == {"a", "b"}
    assert at["route"] == "" and at["status"] == 200
    assert outside["status"] == 404 and "this port serves /retrieve" in outside["error"]["message"]


def test_a_port_another_program_holds_is_a_clear_error():
    async def scenario():
        with socket.socket() as taken:  # bound without SO_REUSEPORT: nobody may share it
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            start_direct_http(answering("a"), "127.0.0.1", taken.getsockname()[1], "/retrieve")

    with pytest.raises(RuntimeError, match="cannot be bound.*choose a free one"):
        asyncio.run(scenario())


def direct_app(port: int) -> ServeApp:
    return ServeApp(app=None, name="retriever", route_prefix="/retrieve",
                    health_url=f"http://127.0.0.1:{port}/retrieve/health", direct=("127.0.0.1", port))


def test_a_deploy_refuses_a_port_another_program_listens_on(monkeypatch):
    monkeypatch.setattr(serving, "cluster_id", lambda: "127.0.0.1:6379")
    check_direct_port(direct_app(free_port()))  # free: fine
    with socket.socket() as other:  # a listener that is not this cluster's retriever
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        other.bind(("127.0.0.1", 0))
        other.listen()
        with pytest.raises(RuntimeError, match=r"direct port 127.0.0.1:\d+ is in use by another program.*"
                                               r"retriever.direct_port"):
            check_direct_port(direct_app(other.getsockname()[1]))


def test_a_port_a_closed_server_left_in_time_wait_is_free_to_deploy_on(monkeypatch):
    # A demo re-run's deploy, seconds after the first run's cluster (and its retriever) stopped.
    monkeypatch.setattr(serving, "cluster_id", lambda: "127.0.0.1:6379")
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server closes first: its end of the connection waits out TIME_WAIT on `port`
        client.recv(1)
        client.close()
    time_wait = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "06"]  # the kernel's TCP table: local address, ..., state (06: TIME_WAIT)
    assert f"0100007F:{port:04X}" in time_wait
    check_direct_port(direct_app(port))


def test_a_redeploy_accepts_the_port_its_own_cluster_holds(monkeypatch):
    async def health(request):
        return JSONResponse({"status": "ok", "cluster": owner})

    async def scenario():
        server = start_direct_http(health, "127.0.0.1", port, "/retrieve")
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            # httpx's sync call inside the loop would block the server: ask from a thread.
            await asyncio.to_thread(check_direct_port, direct_app(port))
        finally:
            server.should_exit = True
            await asyncio.sleep(0.3)

    port = free_port()
    monkeypatch.setattr(serving, "cluster_id", lambda: "127.0.0.1:6379")
    owner = "127.0.0.1:6379"
    asyncio.run(scenario())
    owner = "127.0.0.1:7000"  # another cluster's retriever on the same port
    with pytest.raises(RuntimeError, match="in use by another program"):
        asyncio.run(scenario())

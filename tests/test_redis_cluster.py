"""The shared key pool on a real three-node Redis Cluster (redis-server in cluster mode, joined by
redis-cli): every name of a provider hashes to one slot, so each script call runs on one node, and
providers spread over the nodes. (The conversation store is not cluster-ready: see README.)"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest

from mcp_keygate.keys import ApiKey, Fit, Lease, PoolSettings
from mcp_keygate.keys.redis_pool import RedisKeyPool
from mcp_keygate.outcomes import Outcome, Verdict

from .redis_support import _free_port, redis_binary

pytestmark = pytest.mark.anyio


def _cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free and exists too."""
    while True:
        port = _free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory):
    server = redis_binary()
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed (it comes with redis-server, or: apt-get install redis-tools)")
    ports = [_cluster_port() for _ in range(3)]
    procs = []
    for port in ports:
        workdir = tmp_path_factory.mktemp(f"cluster{port}")
        command = [server, "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes"]
        command += ["--cluster-config-file", "nodes.conf", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        nodes = [f"127.0.0.1:{p}" for p in ports]
        for port in ports:  # every node answers before they are joined
            for _ in range(200):
                ping = subprocess.run([cli, "-p", str(port), "ping"], capture_output=True, text=True)
                if ping.stdout.strip() == "PONG":
                    break
                time.sleep(0.05)
        created = subprocess.run(
            [cli, "--cluster", "create", *nodes, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        yield f"redis://127.0.0.1:{ports[0]}/0"
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


async def test_the_pool_runs_on_a_cluster_one_slot_per_provider(cluster_url):
    from redis.asyncio.cluster import RedisCluster

    cluster = RedisCluster.from_url(cluster_url)
    providers = ("alpha", "beta", "gamma", "delta")
    keys = {p: [ApiKey.create(p, f"secret-{p}-key-{i:04d}", i) for i in range(4)] for p in providers}
    pool = RedisKeyPool(cluster, "clu", keys, {p: PoolSettings(cooldown_s=30) for p in providers})
    try:
        await pool.open()
        for provider in providers:
            first = await pool.acquire(provider, "m")
            assert isinstance(first, Lease)
            await pool.release(first, Verdict(Outcome.RATE_LIMITED, 429, None, "slow down"))
            leases = [await pool.acquire(provider, "m") for _ in range(4)]
            assert [x.key.index for x in leases if isinstance(x, Lease)] != [] and Fit.HELD not in leases
            assert first.key.key_id not in {x.key.key_id for x in leases if isinstance(x, Lease)}
            for lease in leases:
                if isinstance(lease, Lease):
                    await pool.cancel(lease)
            assert await pool.ready_in(provider, "m") == 0
            assert await pool.reset(first.key.key_id)
        slots: dict[str, set[int]] = {}
        async for name in cluster.scan_iter("clu:*"):
            text = name.decode()
            if text != "clu:keys":
                slots.setdefault(text.split(":")[1], set()).add(await cluster.cluster_keyslot(text))
        assert sorted(slots) == sorted(f"{{{p}}}" for p in providers)
        assert all(len(s) == 1 for s in slots.values())  # one slot per provider…
        nodes = {cluster.get_node_from_key(f"clu:{{{p}}}:keys").name for p in providers}
        assert len(nodes) > 1  # …and the providers spread over the nodes
    finally:
        await cluster.aclose()

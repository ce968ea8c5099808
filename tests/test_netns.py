"""tests/netns.py: the commands that build a namespace (plain data), then a real one: the address it
routes to is reachable from inside, another loopback address of this machine is not."""
from __future__ import annotations

import socket
import subprocess
import sys

import pytest

import netns

ADDRESS, OTHER = "127.32.7.1", "127.32.7.2"      # this machine's; the namespace reaches the first only


@pytest.mark.parametrize("address, localnet", [("127.32.7.1", True), ("10.99.0.1", False)])
def test_plan_routes_only_to_the_address(address, localnet):
    plan = netns.plan("ns", "va", "vb", address, "10.213.1.2")
    assert ["ip", "-n", "ns", "route", "add", f"{address}/32", "dev", "vb"] in plan
    assert [s for s in plan if "route" in s and "add" in s] == [
        ["ip", "route", "add", "10.213.1.2/32", "dev", "va"], ["ip", "-n", "ns", "route", "add", f"{address}/32", "dev", "vb"]]
    assert not any("default" in s or "forwarding" in " ".join(s) or "iptables" in s for s in plan)
    sysctls = [s[-1] for s in plan if "sysctl" in s]
    assert sysctls == (["net.ipv4.conf.va.route_localnet=1", "net.ipv4.conf.vb.route_localnet=1"] if localnet else [])


def _connect(port: int) -> str:
    return (f"import socket\n"
            f"for host in ({ADDRESS!r}, {OTHER!r}):\n"
            f"    try:\n"
            f"        socket.create_connection((host, {port}), timeout=5).close(); print(host, 'reached')\n"
            f"    except OSError as e:\n"
            f"        print(host, type(e).__name__)\n")


def test_only_the_address_is_reachable_from_inside():
    why = netns.available()
    if why:
        pytest.skip(why)
    listeners = []
    for host in (ADDRESS, OTHER):
        s = socket.socket()
        s.bind((host, 0 if not listeners else listeners[0].getsockname()[1]))
        s.listen(4)
        listeners.append(s)
    port = listeners[0].getsockname()[1]
    try:
        with netns.OnlyRouteTo(ADDRESS) as ns:
            assert ns.name.startswith(netns.NAME_PREFIX)
            assert [r.split()[0] for r in ns.routes()] == [ADDRESS]
            done = ns.run([sys.executable, "-c", _connect(port)], timeout=30)
            assert done.returncode == 0, done.stderr
            assert done.stdout.split("\n")[:2] == [f"{ADDRESS} reached", f"{OTHER} ConnectionRefusedError"], done.stdout
        assert ns.name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    finally:
        for s in listeners:
            s.close()


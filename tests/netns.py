"""A network namespace that reaches one address of this machine and nothing else.

A client behind `kubectl port-forward` or a LoadBalancer sees one address of the cluster (the
head's); the nodes' addresses and everything else are out of its reach. `OnlyRouteTo(address)`
builds that view on this machine, for tests (tests/test_via_head.py) and the e2e suite (scenario 7):

    this machine (root namespace)                 the namespace (prefix + pid + count)
      `address` (e.g. 127.32.1.5, on lo) <-- veth pair --> 10.213.X.Y/32, lo (its own 127.0.0.1)
      route 10.213.X.Y/32 dev <outside>                   route `address`/32 dev <inside>: the only one

Only what it creates is touched: the namespace, the veth pair, its /32 address and the two /32
routes. When `address` is a loopback one (a pod IP here is 127.x.y.z), `route_localnet` is turned
on for the two veth ends only, so that the kernel routes 127/8 over them; no forwarding, no NAT.
Every other 127.x.y.z inside the namespace is its own loopback: a connection to a node's address
is refused there, as it would fail from outside a cluster.

The namespace's name starts with `name_prefix`, by default $TASUKI_NETNS_PREFIX or "tke2e-" (so
that whoever runs tests beside others can tell theirs). Needs root and iproute2 (`ip`);
`available()` says why not, for a test's skip message.
"""
from __future__ import annotations

import ipaddress
import itertools
import os
import shutil
import subprocess
from types import TracebackType

NAME_PREFIX = os.environ.get("TASUKI_NETNS_PREFIX", "tke2e-")   # names of the namespaces made here start so
INSIDE_NET = "10.213"            # the namespace's own /32 address is 10.213.X.Y (never on a real network)
_count = itertools.count()


def available() -> str | None:
    """None when a namespace can be made here, else why not (a sentence for pytest.skip)."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (CI runs it as root)"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    name = f"{NAME_PREFIX}probe{os.getpid()}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        return f"`ip netns add` failed here: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


def plan(name: str, outside: str, inside: str, address: str, inside_ip: str) -> list[list[str]]:
    """The `ip`/`sysctl` commands that build the namespace `name` whose only route is to `address`
    over the veth pair outside<->inside, its own address being `inside_ip` (pure: no I/O)."""
    steps = [["ip", "netns", "add", name],
             ["ip", "link", "add", outside, "type", "veth", "peer", "name", inside],
             ["ip", "link", "set", inside, "netns", name],
             ["ip", "link", "set", outside, "up"],
             ["ip", "-n", name, "link", "set", "lo", "up"],
             ["ip", "-n", name, "link", "set", inside, "up"],
             ["ip", "-n", name, "addr", "add", f"{inside_ip}/32", "dev", inside],
             ["ip", "route", "add", f"{inside_ip}/32", "dev", outside],
             ["ip", "-n", name, "route", "add", f"{address}/32", "dev", inside]]
    if ipaddress.IPv4Address(address).is_loopback:
        steps += [["sysctl", "-qw", f"net.ipv4.conf.{outside}.route_localnet=1"],
                  ["ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv4.conf.{inside}.route_localnet=1"]]
    return steps


class OnlyRouteTo:
    """A network namespace whose only route leads to `address` (an IPv4 address of this machine,
    e.g. the head pod's 127.x.y.z); a context manager that creates and removes it.

        with OnlyRouteTo("127.32.1.5", "tke2e-obs-") as ns:
            ns.run([sys.executable, "client.py", "tasuki://127.32.1.5:6380"], env=env)
    """

    def __init__(self, address: str, name_prefix: str | None = None) -> None:
        name_prefix = NAME_PREFIX if name_prefix is None else name_prefix
        self.address = str(ipaddress.IPv4Address(address))
        n = next(_count)
        self.name = f"{name_prefix}{os.getpid()}-{n}"
        tag = f"{os.getpid() % 100000}{n}"[-9:]           # interface names have at most 15 characters
        self.outside, self.inside = f"tkv{tag}a", f"tkv{tag}b"
        seq = (os.getpid() * 16 + n) % (254 * 254)
        self.inside_ip = f"{INSIDE_NET}.{seq // 254 + 1}.{seq % 254 + 1}"

    def __enter__(self) -> "OnlyRouteTo":
        self._remove()              # a leftover of a killed run with the same pid
        try:
            for step in plan(self.name, self.outside, self.inside, self.address, self.inside_ip):
                done = subprocess.run(step, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"building the network namespace {self.name} failed at "
                                       f"`{' '.join(step)}`: {done.stderr.strip()} (is another namespace using "
                                       f"{self.inside_ip} or {self.outside}? `ip netns list`, `ip link`)")
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, tb: TracebackType | None) -> None:
        self._remove()

    def _remove(self) -> None:
        # deleting the namespace deletes its veth end, which deletes the pair and the outside route
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)

    def command(self, argv: list[str]) -> list[str]:
        """`argv` prefixed to run inside the namespace (for a Popen of one's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], env: dict | None = None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
        """Run `argv` inside the namespace; its output captured as text unless kwargs say otherwise."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        return subprocess.run(self.command(argv), env=env, timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)

    def popen(self, argv: list[str], env: dict | None = None, **kwargs) -> subprocess.Popen:
        """Start `argv` inside the namespace (subprocess.Popen's keyword arguments pass through)."""
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.Popen(self.command(argv), env=env, **kwargs)

    def routes(self) -> list[str]:
        """The namespace's routes (`ip route` inside it), one line each."""
        out = subprocess.run(["ip", "-n", self.name, "route"], capture_output=True, text=True, check=True).stdout
        return out.strip().splitlines()

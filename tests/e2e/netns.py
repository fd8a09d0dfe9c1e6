"""A second "host" for partition tests: a network namespace joined to the root one by a veth pair.

::

    with Host("a") as host:                      # namespace dn-<random>-a, 10.213.N.0/30
        redis = RedisServer(tmp_path / "redis", bind=host.gateway).start()
        worker = subprocess.Popen([*host.prefix(), DOCNUM, "worker", ...])
        host.cut(redis.port)                     # iptables DROP both ways, in the namespace
        host.heal(redis.port)

The root side of the veth pair (``gateway``, 10.213.N.1) is a local address of the root
namespace: servers started there with ``bind=host.gateway`` are reached by processes of both
namespaces, and a DROP rule inside the namespace cuts only the processes running in it. No
routing, no NAT, nothing changes in the root namespace but one veth interface, which goes away
with the namespace. Needs root, ``ip`` (iproute2) and ``iptables`` (scripts/bootstrap installs
it with the test tools).
"""
from __future__ import annotations

import os
import secrets
import shutil
import subprocess

SUBNET_PREFIX = "10.213"


def unavailable() -> str | None:
    """Why network namespaces with iptables cannot be used here (None when they can)."""
    if os.geteuid() != 0:
        return "network namespaces and iptables need root"
    for tool in ("ip", "iptables"):
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (scripts/bootstrap installs the test tools)"
    probe = f"dn-{secrets.token_hex(3)}-probe"
    created = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if created.returncode != 0:
        return f"`ip netns add` fails: {created.stderr.strip()}"
    try:
        rule = subprocess.run(["ip", "netns", "exec", probe, "iptables", "-A", "OUTPUT", "-p",
                               "tcp", "--dport", "9", "-j", "DROP"], capture_output=True,
                              text=True)
        if rule.returncode != 0:
            return f"iptables does not work in a network namespace: {rule.stderr.strip()}"
    finally:
        subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True)


def _subnets_in_use() -> set[int]:
    out = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True,
                         text=True).stdout
    used = set()
    for word in out.split():
        if word.startswith(SUBNET_PREFIX + "."):
            used.add(int(word.split(".")[2]))
    return used


class Host:
    """A network namespace with one veth pair to the root namespace (a /30 of 10.213.0.0/16)."""

    def __init__(self, tag: str) -> None:
        token = secrets.token_hex(3)
        self.namespace = f"dn-{token}-{tag}"
        self.root_link = f"dn{token}r"       # interface names: at most 15 characters
        self.inner_link = f"dn{token}n"
        free = sorted(set(range(1, 255)) - _subnets_in_use())
        third = free[secrets.randbelow(len(free))]
        self.gateway = f"{SUBNET_PREFIX}.{third}.1"   # root side
        self.address = f"{SUBNET_PREFIX}.{third}.2"   # inside the namespace
        self._rules: list[list[str]] = []
        self._created = False

    def start(self) -> Host:
        _run("ip", "netns", "add", self.namespace)
        self._created = True
        try:
            _run("ip", "link", "add", self.root_link, "type", "veth", "peer", "name",
                 self.inner_link)
            _run("ip", "link", "set", self.inner_link, "netns", self.namespace)
            _run("ip", "addr", "add", f"{self.gateway}/30", "dev", self.root_link)
            _run("ip", "link", "set", self.root_link, "up")
            self.exec("ip", "addr", "add", f"{self.address}/30", "dev", self.inner_link)
            self.exec("ip", "link", "set", self.inner_link, "up")
            self.exec("ip", "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise
        return self

    def prefix(self) -> list[str]:
        """Put in front of an argv to run it inside the namespace (``ip netns exec`` execs it:
        the pid is the command's own)."""
        return ["ip", "netns", "exec", self.namespace]

    def exec(self, *argv: str) -> None:
        _run(*self.prefix(), *argv)

    # -- partitions -----------------------------------------------------------------------
    def _rules_for(self, port: int) -> list[list[str]]:
        # Both directions: nothing the namespace sends reaches the server, nothing the server
        # sends (replies to requests already on their way) reaches the namespace.
        return [["OUTPUT", "-p", "tcp", "-d", self.gateway, "--dport", str(port), "-j", "DROP"],
                ["INPUT", "-p", "tcp", "-s", self.gateway, "--sport", str(port), "-j", "DROP"]]

    def cut(self, port: int) -> None:
        """Drop every packet between this host and ``gateway:port`` (no RST, no FIN: a
        partition, not a refused connection)."""
        for rule in self._rules_for(port):
            self.exec("iptables", "-A", *rule)
            self._rules.append(rule)

    def heal(self, port: int | None = None) -> None:
        """Remove the DROP rules of ``port`` (of every port when None)."""
        for rule in list(self._rules):
            if port is None or rule[rule.index("--dport" if "--dport" in rule else "--sport")
                                    + 1] == str(port):
                self.exec("iptables", "-D", *rule)
                self._rules.remove(rule)

    # -- end ------------------------------------------------------------------------------
    def close(self) -> None:
        """Delete the namespace (its rules and both ends of the veth pair go with it).
        Processes still running inside must have been stopped first."""
        if not self._created:
            return
        subprocess.run(["ip", "netns", "del", self.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.root_link], capture_output=True)
        self._created = False

    def __enter__(self) -> Host:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

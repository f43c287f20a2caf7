"""Where a fleet's replicas are: repeated ``--url``, a file of URLs, or ``dns://host:port`` (every address behind a name).

Why apart from the server API: on Kubernetes a headless Service's name resolves
to one address per ready pod, so the set of replicas is only known by asking DNS
when an operation starts; turning what the user typed into ``host:port``s is
kept free of any server so it is tested on its own.
"""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Iterable, Sequence

from .errors import HotswapError

DNS_SCHEME = "dns://"


class ReplicaUrlError(HotswapError):
    """A replica address cannot be used: a name that does not resolve, a missing port, an empty list."""


def replica_urls(urls: Sequence[str] = (), urls_file: str | Path | None = None) -> list[str]:
    """Every replica's ``host:port``, in the order given, each once.

    ``urls``: ``host:port`` or ``dns://host:port`` (all A/AAAA records of
    ``host``, sorted, so a round-robin DNS answer gives a stable order);
    ``urls_file``: one such entry per line (blank lines and ``#`` comments skipped).
    """
    specs = list(urls)
    if urls_file is not None:
        specs += file_entries(Path(urls_file))
    out: list[str] = []
    for spec in specs:
        for url in resolve(spec):
            if url not in out:
                out.append(url)
    return out


def is_fleet(urls: Sequence[str] = (), urls_file: str | Path | None = None) -> bool:
    """Whether the user named a set of replicas (more than one URL, a file or a DNS name), not one server."""
    return urls_file is not None or len(urls) > 1 or any(u.startswith(DNS_SCHEME) for u in urls)


def file_entries(path: Path) -> list[str]:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise ReplicaUrlError(f"cannot read the replica list {path}: {exc}") from exc
    entries = [line.split("#", 1)[0].strip() for line in lines]
    found = [e for e in entries if e]
    if not found:
        raise ReplicaUrlError(f"the replica list {path} names no replica")
    return found


def resolve(spec: str) -> list[str]:
    """One entry as ``host:port`` addresses: itself, or every address DNS gives for a ``dns://`` name."""
    spec = spec.strip()
    if spec.startswith(DNS_SCHEME):
        host, port = split_host_port(spec[len(DNS_SCHEME):], spec)
        return [join_host_port(a, port) for a in addresses(host, port, spec)]
    if "://" in spec:
        raise ReplicaUrlError(f"replica {spec!r}: write host:port (or dns://host:port for every address behind a name)")
    split_host_port(spec, spec)
    return [spec]


def split_host_port(text: str, spec: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ReplicaUrlError(f"replica {spec!r} needs a port: host:port, e.g. localhost:8000 or dns://trunkserve-replicas:8000")
    return host.strip("[]"), int(port)


def join_host_port(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def addresses(host: str, port: int, spec: str) -> list[str]:
    """Every distinct IPv4/IPv6 address ``host`` resolves to (a headless Service: one per ready pod)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ReplicaUrlError(f"{spec}: {host!r} does not resolve ({exc}); on Kubernetes: is the headless Service "
                              "there, in this namespace, with ready pods behind it?") from exc
    found = _unique(info[4][0] for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6))
    if not found:
        raise ReplicaUrlError(f"{spec}: {host!r} resolves to no IPv4 or IPv6 address")
    return sorted(found, key=lambda a: (ipaddress.ip_address(a.split("%")[0]).version, ipaddress.ip_address(a.split("%")[0])))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))

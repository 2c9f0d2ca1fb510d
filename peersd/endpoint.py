"""Where clients reach the daemon: its Unix socket, or a hub over TCP (optionally TLS).

``CLAUDE_PEERS_URL`` selects a hub: ``tcp://host:port`` or ``tls://host:port`` (with
``CLAUDE_PEERS_TOKEN``); without it, clients use the local socket and may start the
daemon. The daemon side parses its own ``tcp`` setting (``HOST:PORT``) here too.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass

from .config import ConfigError, Settings


@dataclass(frozen=True)
class Endpoint:
    scheme: str  # "unix", "tcp" or "tls"
    path: str = ""
    host: str = ""
    port: int = 0

    @property
    def remote(self) -> bool:
        return self.scheme != "unix"

    def __str__(self) -> str:
        return self.path if self.scheme == "unix" else f"{self.scheme}://{self.host}:{self.port}"


def host_port(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) with a clear error."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"{what} must be HOST:PORT (e.g. 127.0.0.1:7878), not {value!r}")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_endpoint(settings: Settings) -> Endpoint:
    url = settings.url.strip()
    if not url:
        return Endpoint("unix", path=settings.socket)
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("unix", "tcp", "tls"):
        raise ConfigError(
            f"url must be tcp://HOST:PORT, tls://HOST:PORT or unix:///path, not {url!r}"
        )
    if scheme == "unix":
        return Endpoint("unix", path=rest)
    host, port = host_port(rest.rstrip("/"), "url")
    return Endpoint(scheme, host=host, port=port)


def client_tls(settings: Settings) -> ssl.SSLContext:
    """Verify the hub's certificate: against ``tls_ca`` when given, else the system's."""
    context = ssl.create_default_context(cafile=settings.tls_ca or None)
    return context


def open_tcp(endpoint: Endpoint, timeout: float) -> socket.socket:
    sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def tcp_warnings(settings: Settings) -> list[str]:
    """What is risky about the daemon's TCP listener as configured (logged at start,
    shown by ``peers status``)."""
    if settings.tcp and not settings.token:
        return [
            f"the TCP listener {settings.tcp} has no token (tcp_insecure): every user and "
            "process on this machine can connect, read all mail and send as a hub client; "
            "set a token (CLAUDE_PEERS_TOKEN) unless no one else can log in here"
        ]
    return []

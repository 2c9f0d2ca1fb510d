"""Hub mode: the framed protocol over loopback TCP and TLS, tokens, several machines."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import time
from pathlib import Path

import pytest

from peersd import protocol as p
from peersd.client import Client, session_registration
from peersd.config import load
from peersd.errors import Code, PeersError

from .conftest import PYTHON, clean_env

TOKEN = "s3cret-token-for-tests-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def remote_client(home: Path, url: str, token: str | None = TOKEN, **env: str) -> Client:
    """A client on "another machine": its own HOME (so its own machine id) and a URL."""
    home.mkdir(parents=True, exist_ok=True)
    values = {"HOME": str(home), "CLAUDE_PEERS_URL": url, **env}
    if token is not None:
        values["CLAUDE_PEERS_TOKEN"] = token
    return Client(load(env=values), kind="other", autostart=False, timeout=10)


def hub(make_daemon, **extra: str):
    port = free_port()
    d = make_daemon(tcp=f"127.0.0.1:{port}", token=TOKEN, remote_timeout=1, **extra)
    return d, port


def register_remote(client: Client, agents, name: str, host: str) -> p.Peer:
    client.settings.host_label = host
    req = session_registration(client.settings, agents.spawn().pid, "codex", cwd="/work")
    req.name = name
    return client.call(req).peer


def test_two_machines_exchange_mail_over_tcp(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url) as a, remote_client(tmp_path / "m2", url) as b:
        pa = register_remote(a, agents, "builder", "alpha-box")
        pb = register_remote(b, agents, "builder", "beta-box")  # same name, other machine
        assert pa.machine_id != pb.machine_id
        assert (pa.host, pb.host) == ("alpha-box", "beta-box")
        sent = a.request(p.Send, to="builder@beta-box", text="ship it?")
        assert sent.to == pb.id
        (m,) = b.request(p.Claim).messages
        assert (m.id, m.text, m.sender_host) == (sent.message_id, "ship it?", "alpha-box")
        listed = {x.id: x for x in a.request(p.ListPeers, scope="all").peers}
        assert listed[pb.id].host == "beta-box"
        # machine scope is this client's machine only
        assert pb.id not in {x.id for x in a.request(p.ListPeers, scope="machine").peers}


def test_missing_or_wrong_token_is_refused(make_daemon, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    for token in (None, "not-the-right-token-at-all"):
        with pytest.raises(PeersError) as info:
            remote_client(tmp_path / "x", url, token=token).connect()
        assert info.value.code == Code.FORBIDDEN
        assert "token" in info.value.message
    assert "missing or wrong token" in d.log()


def test_remote_peers_are_alive_while_they_heartbeat(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    c = remote_client(tmp_path / "m1", url)
    peer = register_remote(c, agents, "quiet", "far-box")
    c.request(p.Heartbeat)
    c.close()  # no helper connected, no heartbeats from now on
    time.sleep(1.3)
    with d.client() as local:
        assert local.request(p.Sweep).gone == [peer.id]


def test_non_loopback_listener_without_token_refuses_to_start(make_daemon):
    d = make_daemon(start=False, tcp="0.0.0.0:7879")
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert "without a token" in d.log()
    assert not d.settings.socket_path.exists()


def test_loopback_without_token_needs_consent(make_daemon, tmp_path):
    port = free_port()
    d = make_daemon(start=False, tcp=f"127.0.0.1:{port}")
    d.start(wait=False)
    assert d.proc.wait(15) == 1
    assert "tcp_insecure" in d.log()
    ok = make_daemon(tcp=f"127.0.0.1:{port}", tcp_insecure="1")
    with remote_client(tmp_path / "m", f"tcp://127.0.0.1:{port}", token=None) as c:
        assert c.request(p.Status).pid == ok.proc.pid


def _self_signed(folder: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "hub.crt", folder / "hub.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_tls_with_a_self_signed_certificate(make_daemon, agents, tmp_path):
    cert, key = _self_signed(tmp_path)
    d, port = hub(make_daemon, tls_cert=str(cert), tls_key=str(key))
    url = f"tls://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url, CLAUDE_PEERS_TLS_CA=str(cert)) as a:
        peer = register_remote(a, agents, "secure", "tls-box")
        assert a.request(p.Whoami).peer.id == peer.id
    # without trusting the certificate the client refuses to talk
    with pytest.raises(PeersError) as info:
        remote_client(tmp_path / "m2", url).connect()
    assert info.value.code == Code.UNREACHABLE and "TLS" in info.value.message
    # plain TCP against the TLS port gets nowhere either
    with pytest.raises(PeersError):
        remote_client(tmp_path / "m3", f"tcp://127.0.0.1:{port}").connect()


def test_hook_reaches_a_tls_hub_configured_in_the_config_file_alone(make_daemon, agents, tmp_path):
    """Found in review: the hook took the hub's token and CA only from the environment,
    so a hub set up in ~/.claude/claude-peers.toml worked for peers-mcp but not the hook."""
    import json

    cert, key = _self_signed(tmp_path)
    d, port = hub(make_daemon, tls_cert=str(cert), tls_key=str(key))
    url = f"tls://127.0.0.1:{port}"
    home = tmp_path / "m2"
    with remote_client(tmp_path / "m1", url, CLAUDE_PEERS_TLS_CA=str(cert)) as a:
        register_remote(a, agents, "sender", "one-box")
        with remote_client(home, url, CLAUDE_PEERS_TLS_CA=str(cert)) as b:
            req = session_registration(b.settings, agents.spawn().pid, "claude-code", cwd="/w")
            req.name, req.session_id = "receiver", "sess-hub-tls"
            b.call(req)
            a.request(p.Send, to="receiver", text="over TLS")
            (home / ".claude").mkdir(exist_ok=True)
            (home / ".claude" / "claude-peers.toml").write_text(
                f'url = "{url}"\ntoken = "{TOKEN}"\ntls_ca = "{cert}"\n'
            )
            event = {"hook_event_name": "UserPromptSubmit", "session_id": "sess-hub-tls"}
            done = subprocess.run(
                [PYTHON, "-c", "from peers_mcp.hook import main; main()"],
                input=json.dumps({**event, "cwd": "/w", "prompt": "hi"}),
                capture_output=True,
                text=True,
                env=clean_env(home),
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            context = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
            assert "over TLS" in context


def test_hook_and_cli_reach_a_hub(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url) as a:
        register_remote(a, agents, "sender", "one-box")
        with remote_client(tmp_path / "m2", url) as b:
            req = session_registration(b.settings, agents.spawn().pid, "claude-code", cwd="/w")
            req.name, req.session_id = "receiver", "sess-hub-1"
            b.call(req)
            a.request(p.Send, to="receiver", text="over the hub")
            env = clean_env(tmp_path / "m2", CLAUDE_PEERS_URL=url, CLAUDE_PEERS_TOKEN=TOKEN)
            event = {
                "hook_event_name": "UserPromptSubmit",
                "session_id": "sess-hub-1",
                "cwd": "/w",
                "prompt": "hi",
            }
            import json

            done = subprocess.run(
                [PYTHON, "-c", "from peers_mcp.hook import main; main()"],
                input=json.dumps(event),
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            assert done.returncode == 0, done.stderr
            assert not Path("tcp:").exists(), "a URL was taken for a directory"
            context = json.loads(done.stdout)["hookSpecificOutput"]["additionalContext"]
            assert "over the hub" in context
            status = subprocess.run(
                [PYTHON, "-m", "peers_cli.app", "peers", "--scope", "all", "--json"],
                capture_output=True,
                text=True,
                env=env,
                timeout=30,
            )
            assert status.returncode == 0, status.stderr
            hosts = {x["host"] for x in json.loads(status.stdout)}
            assert {"one-box"} <= hosts


def test_hub_clients_cannot_stop_the_hub_or_learn_session_ids(make_daemon, agents, tmp_path):
    d, port = hub(make_daemon)
    url = f"tcp://127.0.0.1:{port}"
    with remote_client(tmp_path / "m1", url) as a, remote_client(tmp_path / "m2", url) as b:
        req = session_registration(a.settings, agents.spawn().pid, "claude-code", cwd="/w")
        req.name, req.session_id = "private", "sess-secret-1"
        a.call(req)
        register_remote(b, agents, "nosy", "b-box")
        listed = b.request(p.ListPeers, scope="all").peers
        assert all(x.session_id is None for x in listed)
        for kind in (p.Shutdown, p.Sweep):
            with pytest.raises(PeersError) as info:
                b.request(kind)
            assert info.value.code == Code.FORBIDDEN
    assert d.running

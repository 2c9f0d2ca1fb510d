"""Settings resolve the same way for everyone: command line, environment, file, defaults."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec
import pytest

from peersd import protocol as p
from peersd.config import ConfigError, Settings, load
from peersd.private_files import ensure_private_dir


def test_defaults_come_from_home_alone(tmp_path):
    s = load(env={"HOME": str(tmp_path)})
    assert s.socket == str(tmp_path / ".claude" / "run" / "claude-peers.sock")
    assert s.db == str(tmp_path / ".claude" / "claude-peers.db")
    assert s.lease_seconds == 30 and s.message_ttl == 7 * 86400 and s.max_text == 32768


def test_order_command_line_then_env_then_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('lease_seconds = 5\nqueue_limit = 7\nlog_level = "debug"\n')
    env = {
        "HOME": str(tmp_path),
        "CLAUDE_PEERS_CONFIG": str(cfg),
        "CLAUDE_PEERS_QUEUE_LIMIT": "9",
        "CLAUDE_PEERS_SOCKET": str(tmp_path / "e.sock"),
    }
    s = load({"socket": str(tmp_path / "cli.sock")}, env=env)
    assert s.lease_seconds == 5  # file
    assert s.queue_limit == 9  # env beats file
    assert s.socket == str(tmp_path / "cli.sock")  # command line beats env
    assert s.log_level == "debug"


def test_default_config_file_is_read(tmp_path):
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "claude-peers.toml").write_text("rate_burst = 3\n")
    assert load(env={"HOME": str(tmp_path)}).rate_burst == 3


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"CLAUDE_PEERS_LEASE_SECONDS": "soon"}, ["lease_seconds", "environment"]),
        ({"CLAUDE_PEERS_QUEUE_LIMIT": "0"}, ["$.queue_limit", "CLAUDE_PEERS_QUEUE_LIMIT", ">= 1"]),
        ({"CLAUDE_PEERS_KILL_GRACE": "nan"}, ["$.kill_grace", "> 0.0", "'nan'"]),
        ({"CLAUDE_PEERS_ESCALATE_AFTER": "-1"}, ["$.escalate_after", ">= 0.0", "'-1'"]),
        # The rules the protocol's types set: a lease a claim could not ask for, a host
        # label a register could not carry.
        ({"CLAUDE_PEERS_LEASE_SECONDS": "7200"}, ["$.lease_seconds", "<= 3600.0", "'7200'"]),
        ({"CLAUDE_PEERS_HOST_LABEL": "h" * 256}, ["$.host_label", "length <= 255"]),
        ({"CLAUDE_PEERS_TOKEN": "t" * 1025}, ["$.token", "length <= 1024"]),
        ({"CLAUDE_PEERS_SYNC": "sometimes"}, ["sync"]),
        ({"CLAUDE_PEERS_LOG_LEVEL": "chatty"}, ["log_level"]),
        ({"CLAUDE_PEERS_SOCKET": "/tmp/" + "x" * 120}, ["107"]),
        ({"CLAUDE_PEERS_CONFIG": "/nonexistent/c.toml"}, ["does not exist"]),
    ],
)
def test_bad_values_name_the_setting(tmp_path, env, words):
    with pytest.raises(ConfigError) as info:
        load(env={"HOME": str(tmp_path), **env})
    for word in words:
        assert word in str(info.value)
    assert "t" * 40 not in str(info.value)  # a token is never echoed


def test_every_numeric_setting_has_its_rule_in_its_type():
    """No bare int or float is left for ``_finish`` to check by hand."""
    bare = [
        f.name
        for f in msgspec.structs.fields(Settings)
        if f.type in (int, float)  # an Annotated type carries its Meta constraints
    ]
    assert bare == []


def test_bad_config_files(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("lease_seconds = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_CONFIG": str(cfg)})
    cfg.write_text("leese_seconds = 3\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*leese_seconds"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_CONFIG": str(cfg)})
    cfg.write_text('max_text = "lots"\n')
    with pytest.raises(ConfigError, match="max_text"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_CONFIG": str(cfg)})


def test_private_dir_is_created_0700_and_tightened(tmp_path):
    d = tmp_path / "run"
    ensure_private_dir(d)
    assert (d.stat().st_mode & 0o777) == 0o700
    os.chmod(d, 0o755)
    ensure_private_dir(d)
    assert (d.stat().st_mode & 0o777) == 0o700


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown")
def test_private_dir_of_another_user_is_refused(tmp_path):
    d = tmp_path / "theirs"
    d.mkdir()
    os.chown(d, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        ensure_private_dir(d)


def test_frame_buffer_reassembles_split_and_joined_frames():
    frames = [p.encode(p.Status(id=i)) for i in range(1, 4)]
    stream = b"".join(frames)
    buf = p.FrameBuffer()
    bodies = []
    for i in range(0, len(stream), 3):  # three bytes at a time
        bodies += buf.feed(stream[i : i + 3])
    assert [p.client_decoder.decode(b).id for b in bodies] == [1, 2, 3]
    assert buf.pending == 0
    assert len(p.FrameBuffer().feed(stream)) == 3


def test_frame_buffer_refuses_oversize_from_the_header_alone():
    buf = p.FrameBuffer(limit=64)
    good = p.encode(p.Status(id=1))
    # complete frames before the oversized header are still handed out
    assert len(buf.feed(good + (65).to_bytes(4, "big"))) == 1
    assert isinstance(buf.error, p.FrameTooLarge) and buf.error.size == 65
    assert buf.feed(good) == []  # nothing after the error


def test_relative_paths_become_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load(
        env={
            "HOME": str(tmp_path),
            "CLAUDE_PEERS_SOCKET": "rel.sock",
            "CLAUDE_PEERS_DB": "~/x.db",
            "CLAUDE_PEERS_LOG_FILE": "~/d.log",
        }
    )
    assert s.socket == str(tmp_path / "rel.sock")
    assert s.db == str(tmp_path / "x.db") and s.log_file == str(tmp_path / "d.log")


def test_frame_must_hold_the_largest_message(tmp_path):
    with pytest.raises(ConfigError, match="max_frame"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_MAX_FRAME": "40000"})


def test_file_errors_do_not_blame_the_environment(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('queue_limit = "many"\n')
    with pytest.raises(ConfigError) as info:
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_CONFIG": str(cfg)})
    assert "config file" in str(info.value) and "CLAUDE_PEERS_" not in str(info.value)
    cfg.write_text('config = "/elsewhere.toml"\n')
    with pytest.raises(ConfigError, match="cannot be set inside"):
        load(env={"HOME": str(tmp_path), "CLAUDE_PEERS_CONFIG": str(cfg)})


def test_frames_round_trip_with_their_tag():
    sample = p.Send(id=3, to="api", text="hi ✓", reply_to="m-abcdef-1")
    assert p.client_decoder.decode(p.encode(sample)[4:]) == sample
    tags = [kind.__struct_config__.tag for kind in p.REQUEST_TYPES]
    assert len(tags) == len(set(tags))


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to chown")
def test_socket_path_of_another_owner_is_refused(tmp_path):
    import socket

    from peersd.private_files import check_socket_owner

    check_socket_owner(Path(tmp_path / "missing.sock"))  # absent is fine
    path = tmp_path / "s.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()
    os.chown(path, 65534, 65534)
    with pytest.raises(ConfigError, match="owned by uid 65534"):
        check_socket_owner(path)

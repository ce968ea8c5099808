"""Another local user must not be able to steer this user's tasuki (issue 12, item 1).

The attacker runs as a second uid (nobody, 65534) in a shared sticky directory, as /tmp is: it
makes this user's session directory before this user does, or links it to its own, and plants a
cluster.json that points at a fake head with a token of its choosing. The fake head is a plain
TCP listener; a connection in its backlog means the victim trusted the planted file (and would
have unpickled the fake head's first reply). Needs root to act as two users.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile

import pytest

from conftest import cluster_env, run_cli

from tasuki import config

ATTACKER = 65534                 # nobody

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the attacker as a second uid "
                                                           f"({ATTACKER}) beside the victim")


def as_attacker(script: str) -> None:
    subprocess.run(["sh", "-c", script], user=ATTACKER, group=ATTACKER, extra_groups=[], cwd="/", check=True,
                   timeout=30)


@pytest.fixture
def shared_tmp():
    """A world-writable sticky directory like /tmp (never /tmp itself: the real session lives there)."""
    path = tempfile.mkdtemp(prefix="tasuki-shared-", dir="/tmp")
    os.chmod(path, 0o1777)
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def fake_head():
    """(port, connections()): a TCP listener; connections() counts the connections made to it so far."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.setblocking(False)
    accepted = []

    def connections() -> int:
        while True:            # the kernel completes a handshake before accept: drain the backlog
            try:
                accepted.append(server.accept()[0])
            except BlockingIOError:
                return len(accepted)

    try:
        yield server.getsockname()[1], connections
    finally:
        for conn in accepted:
            conn.close()
        server.close()


def planted_cluster_file(port: int) -> str:
    return json.dumps({"address": f"tcp://127.0.0.1:{port}", "token": "the-attackers-token", "head_pid": None,
                       "node_pids": [], "metrics": None})


def victim_tries(session: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """The victim's `tasuki.init(address="auto")` and `tasuki status` with TASUKI_TMPDIR=session."""
    env = {**cluster_env(session), "TASUKI_CONNECT_TIMEOUT": "2"}
    init = subprocess.run([sys.executable, "-c", "import tasuki; tasuki.init(address='auto'); print('connected')"],
                          env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return init, run_cli(env, "status", check=False, timeout=60)


def assert_refused(runs, connections, *phrases: str) -> None:
    assert connections() == 0, "the victim connected to the fake head named by the planted cluster.json"
    for run in runs:
        assert run.returncode != 0, run.stdout + run.stderr
        for phrase in phrases:
            assert phrase in run.stderr, run.stderr
        assert "TASUKI_TMPDIR" in run.stderr or "Remove it" in run.stderr, run.stderr
    assert "Traceback" not in runs[1].stderr, runs[1].stderr          # the CLI says it as an error line


def test_a_session_dir_another_user_made_is_refused(shared_tmp, fake_head):
    port, connections = fake_head
    session = os.path.join(shared_tmp, "tasuki-victim")
    as_attacker(f"mkdir -m 0777 {session} && printf '%s' '{planted_cluster_file(port)}' > {session}/cluster.json")
    runs = victim_tries(session)
    assert_refused(runs, connections, f"directory {session}", f"owned by nobody (uid {ATTACKER})", "mode 0777",
                   "set TASUKI_TMPDIR to a directory of your own")


def test_a_session_dir_linked_to_another_users_is_refused(shared_tmp, fake_head):
    port, connections = fake_head
    session, theirs = os.path.join(shared_tmp, "tasuki-victim"), os.path.join(shared_tmp, "theirs")
    as_attacker(f"mkdir -m 0700 {theirs} && printf '%s' '{planted_cluster_file(port)}' > {theirs}/cluster.json"
                f" && chmod 0644 {theirs}/cluster.json && ln -s {theirs} {session}")
    assert_refused(victim_tries(session), connections, f"directory {session}", f"symbolic link (to {theirs})")


def test_a_symlinked_cluster_file_is_refused(shared_tmp, fake_head, tmp_path):
    port, connections = fake_head
    theirs = os.path.join(shared_tmp, "theirs")
    as_attacker(f"mkdir -m 0755 {theirs} && printf '%s' '{planted_cluster_file(port)}' > {theirs}/cluster.json")
    session = tmp_path / "session"
    session.mkdir(mode=0o700)
    (session / "cluster.json").symlink_to(os.path.join(theirs, "cluster.json"))
    assert_refused(victim_tries(str(session)), connections, f"file {session}/cluster.json", "symbolic link")


def test_a_group_writable_session_dir_is_refused(fake_head, tmp_path):
    port, connections = fake_head
    session = tmp_path / "session"
    session.mkdir()
    (session / "cluster.json").write_text(planted_cluster_file(port))
    session.chmod(0o770)
    assert_refused(victim_tries(str(session)), connections, f"directory {session}", "writable by group or others",
                   "mode 0770")


def test_a_session_dir_inside_another_users_directory_is_refused(shared_tmp, tmp_path, monkeypatch):
    theirs = os.path.join(shared_tmp, "theirs")
    as_attacker(f"mkdir -m 0755 {theirs}")
    session = os.path.join(theirs, "mine")
    os.mkdir(session, 0o700)              # ours, but they can rename it away and put theirs in its place
    monkeypatch.setenv("TASUKI_TMPDIR", session)
    expected = fr"lies inside {theirs}, which is owned by nobody \(uid {ATTACKER}\)"
    with pytest.raises(config.UnsafePathError, match=expected):
        config.session_dir()


def test_an_ipc_address_outside_a_private_directory_is_refused(shared_tmp):
    import zmq
    from tasuki import transport
    context = zmq.Context()
    try:
        with pytest.raises(config.UnsafePathError, match=f"directory {shared_tmp}: it is writable by group or"):
            transport.connect(context, f"ipc://{shared_tmp}/head.sock", "token", b"D1")
    finally:
        context.destroy(linger=0)


def test_a_private_session_dir_is_accepted_and_kept_0700(tmp_path, monkeypatch):
    session = tmp_path / "readable"
    session.mkdir(mode=0o755)
    session.chmod(0o755)
    monkeypatch.setenv("TASUKI_TMPDIR", str(session))
    assert config.session_dir() == str(session)
    assert session.stat().st_mode & 0o777 == 0o700          # others could have reached our IPC sockets
    fresh = tmp_path / "fresh" / "session"
    monkeypatch.setenv("TASUKI_TMPDIR", str(fresh))
    assert config.session_dir() == str(fresh) and fresh.stat().st_mode & 0o777 == 0o700
    assert config.read_cluster_file() is None

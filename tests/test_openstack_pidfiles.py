"""The mini OpenStack's pidfile helpers (tests/e2e/openstack/lib.sh) against real processes.

The state directory outlives the daemons: a session's processes are killed when it
ends, and a later run on the same machine meets the old pidfiles. One CI run found
an unrelated process under keystone's old pid, skipped starting keystone and timed
out waiting for it. These tests run lib.sh's functions in bash on live `sleep`
processes; no root and no OpenStack needed.
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

LIB = Path(__file__).parent / "e2e" / "openstack" / "lib.sh"


def lib(state: Path, script: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "K8S_E2E_OS_STATE": str(state)}
    return subprocess.run(["bash", "-c", f'set -euo pipefail; source "{LIB}"; {script}'],
                          env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    (tmp_path / "run").mkdir()
    return tmp_path


@pytest.fixture
def stranger():
    """The pid of a live process that up.sh did not start.

    Started through a shell that exits at once, so init and not pytest reaps it:
    a child of ours would linger as a zombie, which still counts as alive.
    """
    pid = int(subprocess.run(["bash", "-c", "sleep 300 >/dev/null 2>&1 & echo $!"],
                             capture_output=True, text=True, check=True).stdout)
    yield pid
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_a_process_we_recorded_is_running_and_stop_service_ends_it(state, stranger):
    (state / "run" / "keystone.pid").write_text(f"{stranger}\n")
    assert lib(state, "record_identity keystone").returncode == 0
    assert lib(state, "is_running keystone").returncode == 0

    result = lib(state, "stop_service keystone")
    assert result.returncode == 0, result.stderr
    assert "stopped keystone" in result.stderr
    assert not alive(stranger)
    assert list((state / "run").iterdir()) == []


def test_a_reused_pid_is_not_taken_for_the_service_nor_signalled(state, stranger):
    # The identity recorded when keystone started: same boot, an earlier start time.
    identity = lib(state, f"proc_identity {stranger}").stdout.split()
    assert len(identity) == 2 and identity[1].isdigit()
    earlier = f"{identity[0]} {int(identity[1]) - 1}\n"
    (state / "run" / "keystone.pid").write_text(f"{stranger}\n")
    (state / "run" / "keystone.identity").write_text(earlier)
    (state / "run" / "keystone.cfgsum").write_text("0123456789abcdef\n")

    assert lib(state, "is_running keystone").returncode == 1
    result = lib(state, "stop_service keystone")
    assert result.returncode == 0, result.stderr
    assert alive(stranger)
    assert "stopped" not in result.stderr
    assert list((state / "run").iterdir()) == []


def test_a_pidfile_without_identity_is_stale(state, stranger):
    # Pidfiles written before identities were recorded name no process we can vouch for.
    (state / "run" / "keystone.pid").write_text(f"{stranger}\n")
    assert lib(state, "is_running keystone").returncode == 1
    assert lib(state, "stop_service keystone").returncode == 0
    assert alive(stranger)


def test_a_dead_pid_is_not_running(state):
    proc = subprocess.Popen(["true"])
    proc.wait()
    (state / "run" / "glance.pid").write_text(f"{proc.pid}\n")
    (state / "run" / "glance.identity").write_text("boot 1\n")
    assert lib(state, "is_running glance").returncode == 1
    assert lib(state, f"proc_identity {proc.pid}").returncode == 1

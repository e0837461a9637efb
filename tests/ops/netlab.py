"""Two real sshd instances in their own network namespaces: a bastion and a control-plane node.

    test process (host netns) --veth-- bastion netns --veth-- control-plane netns

The host has a route to the bastion only, and the bastion does not forward packets, so the
control-plane node is reachable only by going through the bastion's sshd (ssh -J), as in the cloud.
Each sshd also gets a private mount namespace with an overlay on /etc, which provides what a real
node has and this machine lacks (the `sshd` privilege-separation user, /etc/kubernetes/admin.conf,
a name for the control-plane node in the bastion's /etc/hosts) without touching the host's /etc.
"""
from __future__ import annotations

import os
import random
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

SETUP = """\
set -eu
mount --make-rprivate /
mkdir -p "$WORK/ov"
mount -t tmpfs tmpfs "$WORK/ov"
mkdir -p "$WORK/ov/up" "$WORK/ov/work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$WORK/ov/up,workdir=$WORK/ov/work" /etc
grep -q '^sshd:' /etc/passwd || echo 'sshd:x:65534:65534:privsep:/run/sshd:/usr/sbin/nologin' >> /etc/passwd
mount -t tmpfs tmpfs /run
mkdir -p /run/sshd
ip link set lo up
if [ -f "$WORK/hosts.extra" ]; then cat "$WORK/hosts.extra" >> /etc/hosts; fi
if [ -f "$WORK/admin.conf" ]; then
  mkdir -p /etc/kubernetes
  install -m 0600 "$WORK/admin.conf" /etc/kubernetes/admin.conf
fi
exec "$SSHD" -D -e -f "$WORK/sshd_config"
"""

SSHD_CONFIG = """\
ListenAddress 0.0.0.0:22
HostKey {work}/host_ed25519
AuthorizedKeysFile {authorized}
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PidFile none
AllowTcpForwarding {forwarding}
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
LogLevel VERBOSE
"""


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@dataclass
class Host:
    name: str
    work: Path
    proc: subprocess.Popen
    address: str = ""
    host_key_pub: str = ""

    def log(self) -> str:
        return (self.work / "sshd.log").read_text(errors="replace")


@dataclass
class Lab:
    root: Path
    ssh: str
    user_key: Path
    ssh_config: Path
    bastion: Host
    cp: Host
    procs: list = field(default_factory=list)

    def stop(self) -> None:
        for proc in self.procs + [self.cp.proc, self.bastion.proc]:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def _start_host(name: str, root: Path, sshd: str, ssh_keygen: str, authorized: Path, forwarding: str,
                admin_conf: bytes | None = None, hosts_extra: str = "") -> Host:
    work = root / name
    work.mkdir(mode=0o700)
    _run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(work / "host_ed25519"))
    (work / "sshd_config").write_text(SSHD_CONFIG.format(work=work, authorized=authorized, forwarding=forwarding))
    if admin_conf is not None:
        (work / "admin.conf").write_bytes(admin_conf)
        (work / "admin.conf").chmod(0o600)
    if hosts_extra:
        (work / "hosts.extra").write_text(hosts_extra)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "WORK": str(work), "SSHD": sshd}
    proc = subprocess.Popen(["unshare", "--net", "--mount", "sh", "-c", SETUP], env=env,
                            stdin=subprocess.DEVNULL, stdout=(work / "sshd.log").open("wb"),
                            stderr=subprocess.STDOUT)
    return Host(name, work, proc, host_key_pub=(work / "host_ed25519.pub").read_text().strip())


def _wait_listening(host: Host, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while "Server listening on 0.0.0.0 port 22" not in host.log():
        if host.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"sshd {host.name} did not start: {host.log()[-2000:]}")
        time.sleep(0.05)


def start_lab(root: Path, sshd: str, ssh: str, ssh_keygen: str, admin_conf: bytes, cp_name: str) -> Lab:
    root.mkdir(parents=True, exist_ok=True)
    user_key = root / "id_ed25519"
    _run(ssh_keygen, "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", str(user_key))
    authorized = root / "authorized_keys"
    authorized.write_text((root / "id_ed25519.pub").read_text())

    # A random /24 in 100.64.0.0/10 (shared address space): nothing real lives there, and parallel
    # runs do not collide. Interface names carry the same random tag.
    tag = random.randrange(0x1000, 0xFFFF)
    net = f"100.{64 + (tag >> 10) % 64}.{tag & 0xFF}"
    host_ip, bastion_ip, bastion_inner, cp_ip = f"{net}.1", f"{net}.2", f"{net}.5", f"{net}.6"

    bastion = _start_host("bastion", root, sshd, ssh_keygen, authorized, "yes",
                          hosts_extra=f"{cp_ip} {cp_name}\n")
    cp = _start_host("cp", root, sshd, ssh_keygen, authorized, "no", admin_conf=admin_conf)
    lab_procs: list = []
    try:
        _wait_listening(bastion)
        _wait_listening(cp)
        bpid, cpid = str(bastion.proc.pid), str(cp.proc.pid)
        hb, bh, bc, cb = (f"opsh{tag:x}", f"opsb{tag:x}", f"opsc{tag:x}", f"opsd{tag:x}")
        _run("ip", "link", "add", hb, "type", "veth", "peer", "name", bh, "netns", bpid)
        _run("ip", "addr", "add", f"{host_ip}/30", "dev", hb)
        _run("ip", "link", "set", hb, "up")
        _run("nsenter", "-t", bpid, "-n", "sh", "-c",
             f"ip addr add {bastion_ip}/30 dev {bh} && ip link set {bh} up && "
             f"ip link add {bc} type veth peer name {cb} netns {cpid} && "
             f"ip addr add {bastion_inner}/30 dev {bc} && ip link set {bc} up")
        _run("nsenter", "-t", cpid, "-n", "sh", "-c", f"ip addr add {cp_ip}/30 dev {cb} && ip link set {cb} up")
    except BaseException:
        for p in (bastion.proc, cp.proc):
            p.kill()
            p.wait()
        raise
    bastion.address, cp.address = bastion_ip, cp_ip

    known = root / "known_hosts"
    known.write_text(f"{bastion_ip} {bastion.host_key_pub}\n{cp_name} {cp.host_key_pub}\n")
    config = root / "ssh_config"
    # What an operator's ~/.ssh/config would say; strict host key checking against known keys.
    config.write_text(
        "Host *\n"
        "  User root\n"
        f"  IdentityFile {user_key}\n"
        "  IdentitiesOnly yes\n"
        "  IdentityAgent none\n"
        f"  UserKnownHostsFile {known}\n"
        "  GlobalKnownHostsFile /dev/null\n"
        "  StrictHostKeyChecking yes\n"
        "  ConnectTimeout 10\n"
        "  LogLevel ERROR\n")
    lab = Lab(root, ssh, user_key, config, bastion, cp, lab_procs)
    _wait_ssh(lab)
    return lab


def _wait_ssh(lab: Lab, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((lab.bastion.address, 22), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)

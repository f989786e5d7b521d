#!/usr/bin/env python3
"""Machines for the Octo Pet Shop on one computer: per environment one database host, two
service hosts and one web host, each a real OpenSSH server, and the targets that reach them.

    python3 examples/octopetshop/hosts/hosts.py up --dir /tmp/octo-hosts
    export OCTOPETSHOP_SSH_KEY="$(cat /tmp/octo-hosts/id_ed25519)"
    conveyor apply -f /tmp/octo-hosts/targets.yaml
    ...
    python3 examples/octopetshop/hosts/hosts.py down --dir /tmp/octo-hosts

As root, each host gets a network namespace of its own (`ip netns`, a veth link, an address
10.77.N.2), so what Conveyor sends really crosses a network; otherwise (or with --loopback)
each sshd listens on a port of 127.0.0.1. Every host has its own folder (its target's work_dir)
in --dir: what a deployment put on a host is there to read. `targets.yaml` pins each host's key
and names the private key as ${env:OCTOPETSHOP_SSH_KEY}, so no key lies in the file; it also
disables the example's `Local` target, so that the components deploy to the hosts only.

Needs OpenSSH's sshd and ssh-keygen (Debian: apt-get install openssh-server) and, on the hosts,
what the components' scripts use: bash, tar, sha256sum and python3. Stdlib only.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"
ENVIRONMENTS = ("Development", "Test", "Staging", "Production")
# host name suffix -> the roles of conveyor.yaml it takes
HOSTS = {
    "db": ["octopetshop-database"],
    "svc-1": ["octopetshop-services"],
    "svc-2": ["octopetshop-services"],
    "web": ["octopetshop-web"],
}
LOCAL = """  - name: Local
    description: Folders on the Conveyor server, disabled while the hosts take its roles.
    environments: [Development, Test, Staging, Production]
    roles: [octopetshop-database, octopetshop-services, octopetshop-web]
    disabled: true
"""


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _keypair(path: Path, comment: str) -> str:
    if not path.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return " ".join(path.with_suffix(".pub").read_text().split()[:2])


def _namespace(index: int, name: str) -> tuple[str, list[str]]:
    """A network namespace joined by a veth link: the host's address and its command prefix."""
    ns, outside, inside = f"octo-{name}", f"octo{index}o", f"octo{index}i"
    gateway, address = f"10.77.{index}.1", f"10.77.{index}.2"
    _run("ip", "netns", "add", ns)
    _run("ip", "link", "add", outside, "type", "veth", "peer", "name", inside)
    _run("ip", "link", "set", inside, "netns", ns)
    _run("ip", "addr", "add", f"{gateway}/30", "dev", outside)
    _run("ip", "link", "set", outside, "up")
    _run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{address}/30", "dev", inside)
    _run("ip", "netns", "exec", ns, "ip", "link", "set", inside, "up")
    _run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
    return address, ["ip", "netns", "exec", ns]


def _start(folder: Path, address: str, port: int, prefix: list[str], authorized: str) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    host_key = _keypair(folder / "host_ed25519", folder.name)
    (folder / "authorized_keys").write_text(authorized + "\n")
    (folder / "sshd_config").write_text(
        "\n".join(
            [
                f"Port {port}",
                f"ListenAddress {address}",
                f"HostKey {folder / 'host_ed25519'}",
                f"AuthorizedKeysFile {folder / 'authorized_keys'}",
                f"PidFile {folder / 'sshd.pid'}",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                "StrictModes no",
                "UsePAM no",
                "MaxStartups 100",
                "MaxSessions 20",
                # A session whose client vanished (a cut link) ends instead of lingering.
                "ClientAliveInterval 10",
                "ClientAliveCountMax 3",
                "Subsystem sftp internal-sftp",
                "",
            ]
        )
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    log = (folder / "sshd.log").open("ab")
    process = subprocess.Popen(
        [*prefix, SSHD, "-D", "-e", "-f", str(folder / "sshd_config")],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while f"listening on {address} port {port}" not in (folder / "sshd.log").read_text().lower():
        if process.poll() is not None or time.monotonic() > deadline:
            sys.exit(f"sshd for {folder.name} did not start: see {folder / 'sshd.log'}")
        time.sleep(0.05)
    (folder / "host_key.pub").write_text(host_key + "\n")
    return process.pid


def up(folder: Path, environments: list[str], loopback: bool) -> None:
    if Path(folder / "hosts.json").exists():
        sys.exit(f"hosts are already up in {folder}: run `down --dir {folder}` first")
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None:
        sys.exit("needs OpenSSH's sshd and ssh-keygen: apt-get install openssh-server")
    isolated = os.geteuid() == 0 and not loopback and shutil.which("ip") is not None
    folder = folder.resolve()
    folder.mkdir(parents=True, exist_ok=True)
    authorized = _keypair(folder / "id_ed25519", "conveyor")
    hosts: list[dict[str, object]] = []
    targets = [LOCAL]
    for env in environments:
        for suffix, roles in HOSTS.items():
            name = f"{env.lower()}-{suffix}"
            index = len(hosts) + 1
            address, prefix, port = "127.0.0.1", [], _free_port()
            if isolated:
                address, prefix = _namespace(index, name)
                port = 22
            pid = _start(folder / name, address, port, prefix, authorized)
            hosts.append(
                {
                    "name": name,
                    "pid": pid,
                    "address": address,
                    "port": port,
                    "namespace": prefix[-1] if prefix else None,
                    "index": index,
                }
            )
            host_key = (folder / name / "host_key.pub").read_text().strip()
            targets.append(
                f"  - name: {name}\n"
                f"    kind: ssh\n"
                f"    description: The {suffix} host of {env}.\n"
                f"    environments: [{env}]\n"
                f"    roles: [{', '.join(roles)}]\n"
                f"    host: {address}\n"
                f"    port: {port}\n"
                f"    user: {getpass.getuser()}\n"
                f"    host_key: {host_key}\n"
                f"    private_key: ${{env:OCTOPETSHOP_SSH_KEY}}\n"
                f"    work_dir: {folder / name / 'conveyor'}\n"
            )
            print(f"{name:<22} {address}:{port}")
    (folder / "targets.yaml").write_text(
        "# Made by examples/octopetshop/hosts/hosts.py: the Octo Pet Shop's hosts.\n"
        "targets:\n" + "".join(targets)
    )
    (folder / "hosts.json").write_text(json.dumps(hosts, indent=2))
    how = "in network namespaces of their own" if isolated else "on 127.0.0.1"
    print(f"\n{len(hosts)} hosts up {how}. Next:")
    print(f'  export OCTOPETSHOP_SSH_KEY="$(cat {folder / "id_ed25519"})"')
    print(f"  conveyor apply -f {folder / 'targets.yaml'}")
    print("  conveyor target check")


def down(folder: Path) -> None:
    record = folder / "hosts.json"
    if not record.exists():
        sys.exit(f"no hosts are up in {folder}")
    for host in json.loads(record.read_text()):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(host["pid"]), signal.SIGTERM)
        if host.get("namespace"):
            # sshd's sessions run in their own process groups: every process of the host goes.
            found = subprocess.run(
                ["ip", "netns", "pids", str(host["namespace"])], capture_output=True, text=True
            )
            for pid in found.stdout.split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", str(host["namespace"])], capture_output=True)
            subprocess.run(["ip", "link", "del", f"octo{host['index']}o"], capture_output=True)
    record.unlink()
    print(f"hosts in {folder} are down (their folders stay, with what was deployed)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    start = sub.add_parser("up", help="start the hosts and write targets.yaml")
    start.add_argument("--dir", type=Path, required=True, help="where the hosts keep their files")
    start.add_argument("--environments", nargs="+", default=list(ENVIRONMENTS))
    start.add_argument("--loopback", action="store_true", help="no namespaces, even as root")
    stop = sub.add_parser("down", help="stop the hosts")
    stop.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "up":
        up(args.dir, args.environments, args.loopback)
    else:
        down(args.dir)


if __name__ == "__main__":
    main()

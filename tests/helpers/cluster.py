"""A one-node Slurm cluster with accounting, from Debian's packages, for the tests and for a
person who wants to try the Slurm path on one machine (``make cluster`` / ``make cluster-down``).

munged, MariaDB, slurmdbd, slurmctld and slurmd each run from a temp folder with their own
sockets and ports on loopback; nothing touches /etc or the system's services. Every daemon runs
in the foreground of its own session and is stopped by its pid (see ``stop``).

    python tests/helpers/cluster.py up HOME    # starts it, prints `export SLURM_CONF=...`
    python tests/helpers/cluster.py down HOME  # stops it and removes HOME
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

INSTALL = "sudo apt-get install slurm-wlm slurmdbd munge mariadb-server"
COMMANDS = (
    *("munged", "mungekey", "slurmctld", "slurmd", "slurmdbd"),
    *("mariadbd", "mariadb-install-db"),
)
PARTITION = "debug"
CLUSTER_NAME = "peftlab"
MEMORY_MB = 16_000  # what the node offers its jobs: a few tiny-model jobs at once
START_TIMEOUT_S = 60


class Unavailable(Exception):
    """The cluster can't be had on this machine (its packages, or root, are missing)."""


@dataclass(frozen=True)
class Cluster:
    home: Path
    partition: str = PARTITION

    @property
    def conf(self) -> Path:
        return self.home / "slurm.conf"

    def env(self) -> dict[str, str]:
        """What a process needs to talk to this cluster (sbatch, squeue, submitit's jobs)."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def command(self, *argv: str, check: bool = True) -> str:
        """A Slurm client command (scontrol, squeue, sacct) against this cluster; its stdout."""
        done = subprocess.run(
            argv, env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")
        return done.stdout


def missing() -> str | None:
    """Why the cluster can't start here, or None."""
    if os.geteuid() != 0:
        return f"the one-node Slurm cluster runs its daemons as root; as root: {INSTALL}"
    absent = [name for name in COMMANDS if shutil.which(name) is None]
    if absent:
        return f"no {', '.join(absent)} here: {INSTALL}"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def slurm_cluster(home: Path) -> Iterator[Cluster]:
    """The whole cluster in ``home`` (made here), stopped and removed afterwards."""
    start(home)
    try:
        yield Cluster(home)
    finally:
        stop(home)


def start(home: Path) -> Cluster:
    """Start every daemon, each once the one it needs answers; on any failure stop them all."""
    reason = missing()
    if reason:
        raise Unavailable(reason)
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o755)  # munge and mysql reach their own folders inside
    try:
        munge_socket = start_munge(home / "munge")
        database = start_mariadb(home / "mysql")
        dbd_port = start_slurmdbd(home / "slurmdbd", munge_socket, database)
        cluster = start_slurm(home, munge_socket, dbd_port)
    except BaseException:
        stop(home)
        raise
    return cluster


def start_munge(folder: Path) -> Path:
    folder.mkdir()
    folder.chmod(0o755)  # clients (root's jobs too) reach the socket; the key itself is 0600
    as_munge = owned_by(folder, "munge")
    key, socket_path = folder / "munge.key", folder / "munge.socket"
    run([*as_munge, "mungekey", "--create", f"--keyfile={key}"])
    munged = daemon(
        folder.parent,
        "munged",
        [*as_munge, "munged", "--foreground", f"--key-file={key}", f"--socket={socket_path}",
         f"--pid-file={folder / 'munged.pid'}", f"--log-file={folder / 'munged.log'}",
         f"--seed-file={folder / 'munged.seed'}"],
    )  # fmt: skip
    wait_for(lambda: succeeds(["munge", "-n", f"--socket={socket_path}"]), munged)
    return socket_path


@dataclass(frozen=True)
class Database:
    port: int
    user: str
    password: str


def start_mariadb(folder: Path) -> Database:
    folder.mkdir()
    owned_by(folder, "mysql")
    data, sock = folder / "data", folder / "mysqld.sock"
    run(["mariadb-install-db", "--no-defaults", "--user=mysql", f"--datadir={data}",
         "--skip-test-db", "--auth-root-authentication-method=socket"])  # fmt: skip
    port = free_port()
    mariadbd = daemon(
        folder.parent,
        "mariadbd",
        ["mariadbd", "--no-defaults", "--user=mysql", f"--datadir={data}", f"--socket={sock}",
         f"--port={port}", "--bind-address=127.0.0.1", "--skip-name-resolve",
         f"--pid-file={folder / 'mariadbd.pid'}", f"--log-error={folder / 'error.log'}"],
    )  # fmt: skip
    client = ["mariadb", "--no-defaults", f"--socket={sock}", "-u", "root"]
    wait_for(lambda: succeeds([*client, "-e", "SELECT 1"]), mariadbd)
    database = Database(port, "slurm", secrets.token_hex(12))
    grant = (
        f"CREATE USER '{database.user}'@'127.0.0.1' IDENTIFIED BY '{database.password}'; "
        f"GRANT ALL ON slurm_acct_db.* TO '{database.user}'@'127.0.0.1';"
    )
    run([*client, "-e", grant])
    return database


def start_slurmdbd(folder: Path, munge_socket: Path, database: Database) -> int:
    folder.mkdir()
    port = free_port()
    conf = folder.parent / "slurmdbd.conf"  # slurmdbd reads it beside $SLURM_CONF
    conf.write_text(
        lines(
            AuthType="auth/munge",
            AuthInfo=f"socket={munge_socket}",
            DbdHost="localhost",
            DbdAddr="127.0.0.1",
            DbdPort=port,
            SlurmUser="root",
            PidFile=folder / "slurmdbd.pid",
            LogFile=folder / "slurmdbd.log",
            StorageType="accounting_storage/mysql",
            StorageHost="127.0.0.1",
            StoragePort=database.port,
            StorageUser=database.user,
            StoragePass=database.password,
            StorageLoc="slurm_acct_db",
        )
    )
    conf.chmod(0o600)  # slurmdbd refuses a config others can read: it holds the password
    settings = {**os.environ, "SLURM_CONF": str(Cluster(folder.parent).conf)}
    slurmdbd = daemon(folder.parent, "slurmdbd", ["slurmdbd", "-D"], env=settings)
    wait_for(lambda: port_open(port), slurmdbd)
    return port


def start_slurm(home: Path, munge_socket: Path, dbd_port: int) -> Cluster:
    node = socket.gethostname().split(".")[0]
    spool = home / "slurm"
    for sub in ("state", "spool"):
        (spool / sub).mkdir(parents=True)
    cluster = Cluster(home)
    cluster.conf.write_text(
        lines(
            ClusterName=CLUSTER_NAME,
            SlurmctldHost=node,
            SlurmctldPort=free_port(),
            SlurmdPort=free_port(),
            SlurmUser="root",
            AuthType="auth/munge",
            AuthInfo=f"socket={munge_socket}",
            StateSaveLocation=spool / "state",
            SlurmdSpoolDir=spool / "spool",
            SlurmctldPidFile=spool / "slurmctld.pid",
            SlurmdPidFile=spool / "slurmd.pid",
            SlurmctldLogFile=spool / "slurmctld.log",
            SlurmdLogFile=spool / "slurmd.log",
            ProctrackType="proctrack/linuxproc",
            TaskPlugin="task/none",
            SelectType="select/cons_tres",
            SelectTypeParameters="CR_Core_Memory",
            DefMemPerCPU=1000,
            MinJobAge=86400,  # finished jobs stay visible to scontrol for the tests
            KillWait=5,
            ReturnToService=2,
            JobRequeue=1,
            AccountingStorageType="accounting_storage/slurmdbd",
            AccountingStorageHost="localhost",
            AccountingStoragePort=dbd_port,
            AccountingStoragePass=munge_socket,  # Slurm's name for the munge socket towards dbd
            JobAcctGatherType="jobacct_gather/none",
            JobCompType="jobcomp/none",
            MpiDefault="none",
            MailProg="/bin/true",
            # Tiny jobs: a few at once even on a 2-core machine (slurmd takes the node as said).
            SlurmdParameters="config_overrides",
            NodeName=f"{node} CPUs={max(4, os.cpu_count())} RealMemory={MEMORY_MB} State=UNKNOWN",
            PartitionName=f"{PARTITION} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        )
    )
    # slurmctld registers the cluster with slurmdbd on its first start
    slurmctld = daemon(home, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(cluster.conf)])
    wait_for(lambda: "UP" in cluster.command("scontrol", "ping", check=False), slurmctld)
    slurmd = daemon(home, "slurmd", ["slurmd", "-D", "-f", str(cluster.conf)])
    wait_for(lambda: node_state(cluster) == "idle", slurmd)
    return cluster


def node_state(cluster: Cluster) -> str:
    return cluster.command("sinfo", "-h", "-o", "%T", check=False).strip()


def lines(**settings) -> str:
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def owned_by(folder: Path, user: str) -> list[str]:
    """Give ``folder`` to ``user``; returns the prefix that runs a command as them."""
    record = pwd.getpwnam(user)
    os.chown(folder, record.pw_uid, record.pw_gid)
    return ["runuser", "-u", user, "--"]


@dataclass(frozen=True)
class Daemon:
    name: str
    process: subprocess.Popen
    output: Path


def daemon(home: Path, name: str, argv: list[str], env: dict[str, str] | None = None) -> Daemon:
    """Start ``argv`` in the foreground of its own session, its output in ``home/name.out``,
    its pid recorded in ``home/pids.json`` for ``stop``."""
    output = home / f"{name}.out"
    with open(output, "wb") as sink:
        process = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
            start_new_session=True,
        )
    pids_file = home / "pids.json"
    pids = json.loads(pids_file.read_text()) if pids_file.exists() else {}
    pids[name] = process.pid
    pids_file.write_text(json.dumps(pids))
    return Daemon(name, process, output)


def stop(home: Path) -> None:
    """Stop every daemon started in ``home``, last started first, then remove ``home``."""
    pids_file = home / "pids.json"
    pids = json.loads(pids_file.read_text()) if pids_file.exists() else {}
    for name, pid in reversed(pids.items()):
        terminate(pid, name)
    shutil.rmtree(home, ignore_errors=True)


def terminate(pid: int, name: str) -> None:
    """SIGTERM, then SIGKILL after 30 s; gone or a zombie counts as stopped."""
    for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            reap(pid)
            if not alive(pid):
                return
            time.sleep(0.1)
    raise RuntimeError(f"{name} (pid {pid}) did not stop")


def reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child (`make cluster`): init reaps it
        os.waitpid(pid, os.WNOHANG)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def run(argv: list[str]) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]}: {(done.stderr or done.stdout).strip()[-2000:]}")


def succeeds(argv: list[str]) -> bool:
    return subprocess.run(argv, capture_output=True, timeout=30, check=False).returncode == 0


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def wait_for(ready, started: Daemon) -> None:
    """Until ``ready()``; a daemon that exits or hangs fails with the end of its output."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline and started.process.poll() is None:
        if ready():
            return
        time.sleep(0.2)
    output = started.output.read_text(errors="replace")[-1500:]
    raise RuntimeError(f"{started.name} did not come up within {START_TIMEOUT_S} s: {output}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in {"up", "down"}:
        print(__doc__.split("\n\n")[-1], file=sys.stderr)
        return 2
    action, home = argv[0], Path(argv[1]).resolve()
    if action == "up" and (home / "pids.json").exists():
        print(f"error: a cluster already runs from {home}: stop it with `make cluster-down`")
        return 1
    if action == "down":
        stop(home)
        print(f"stopped the cluster in {home}")
        return 0
    try:
        cluster = start(home)
    except Unavailable as reason:
        print(f"error: {reason}", file=sys.stderr)
        return 1
    print(f"Slurm is up (partition {cluster.partition}); in your shell:")
    print(f"export SLURM_CONF={cluster.conf}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

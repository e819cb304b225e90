"""Real servers for the tests, started from Debian's packages on loopback and stopped by pid:
a throwaway PostgreSQL cluster (shared Optuna studies; a team's MLflow store), the one-node
Slurm cluster (cluster.py), a team's ``mlflow server`` over PostgreSQL (session fixtures)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import cluster
from helpers.cluster import free_port
from helpers.servers import MLFLOW_SERVER_ENV, serving

INSTALL_POSTGRES = "sudo apt-get install postgresql"


def require_service(message: str) -> None:
    """A test whose server can't be had here skips, naming the install command; in CI
    (PEFTLAB_REQUIRE_SERVICES=1 from .ci/run) it fails instead."""
    if os.environ.get("PEFTLAB_REQUIRE_SERVICES") == "1":
        pytest.fail(message)
    pytest.skip(message)


@dataclass(frozen=True)
class Postgres:
    host: str
    port: int
    user: str
    password: str

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        with psycopg.connect(
            host=self.host, port=self.port, user=self.user, password=self.password,
            dbname="postgres", autocommit=True,
        ) as connection:  # fmt: skip
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres_cluster(port: int) -> Iterator[Postgres]:
    """A fresh cluster in a temp folder on 127.0.0.1:port (its socket in that folder too),
    password authentication, stopped and removed afterwards.

    initdb refuses root: as root, the cluster belongs to the ``postgres`` user, in a folder
    outside pytest's root-only temp tree.
    """
    bin_dir = postgres_bin()
    if bin_dir is None:
        require_service(f"no PostgreSQL server here: {INSTALL_POSTGRES}")
    owner = "postgres" if os.geteuid() == 0 else None
    as_owner = ["runuser", "-u", owner, "--"] if owner else []
    home = Path(tempfile.mkdtemp(prefix="peftlab-pg-"))
    data, password_file = home / "data", home / "password"
    password = "s3cret-pw"  # a throwaway cluster's; the tests check it is never written out
    password_file.write_text(password)
    if owner:
        record = pwd.getpwnam(owner)
        os.chown(home, record.pw_uid, record.pw_gid)
        os.chown(password_file, record.pw_uid, record.pw_gid)

    def run(*command: str) -> None:
        subprocess.run([*as_owner, *command], check=True, capture_output=True, timeout=120)

    try:
        run(
            str(bin_dir / "initdb"), "-D", str(data), "-U", "peftlab", "--auth=scram-sha-256",
            f"--pwfile={password_file}", "--no-sync",
        )  # fmt: skip
        options = f"-p {port} -c listen_addresses=127.0.0.1 -k {home} -c fsync=off"
        run(
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(home / "log"),
            "-w",
            "start",
        )
        try:
            yield Postgres("127.0.0.1", port, "peftlab", password)
        finally:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on loopback for the session (see postgres_cluster)."""
    with postgres_cluster(free_port()) as server:
        yield server


@pytest.fixture(scope="session")
def slurm():
    """A one-node Slurm cluster with accounting for the session (see cluster.py): skipped where
    it can't be installed, naming the command; in CI (PEFTLAB_REQUIRE_CLUSTER=1) failed."""
    reason = cluster.missing()
    if reason:
        if os.environ.get("PEFTLAB_REQUIRE_CLUSTER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    with cluster.slurm_cluster(Path(tempfile.mkdtemp(prefix="peftlab-slurm-"))) as running:
        yield running


@pytest.fixture(scope="session")
def mlflow_on_postgres(postgres, tmp_path_factory: pytest.TempPathFactory):
    """A team's tracking server: ``mlflow server`` over PostgreSQL, artifacts proxied to a
    folder, on loopback; yields its base URL."""
    store = postgres.create_database("mlflow")
    artifacts = tmp_path_factory.mktemp("server-artifacts")
    base = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server", "--backend-store-uri", store,
        "--artifacts-destination", str(artifacts), "--host", "127.0.0.1",
        "--port", base.rsplit(":", 1)[1], "--workers", "2",
    ]  # fmt: skip
    with serving(command, f"{base}/health", env=MLFLOW_SERVER_ENV):
        yield base

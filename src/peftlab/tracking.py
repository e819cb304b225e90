"""MLflow: the experiment, the run's lifecycle, and what each run records."""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from email.parser import HeaderParser
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import pandas as pd
import requests
from filelock import FileLock
from mlflow.data.huggingface_dataset_source import HuggingFaceDatasetSource
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient, fluent
from mlflow.tracking.registry import UnsupportedModelRegistryStoreURIException

from peftlab import interrupts, names
from peftlab.config import TrackingConfig
from peftlab.errors import PeftlabError
from peftlab.redaction import redact
from peftlab.schema import DatasetConfig

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
SERVER_TIMEOUT_S = 5.0
SERVER_POLL_S = 1.0  # between requests to a server that does not answer yet
# One connection attempt to a database store gives up after this; its drivers' keyword for it.
DATABASE_TIMEOUT_S = 5
CONNECT_TIMEOUT_ARGS = {"postgresql": "connect_timeout", "mysql": "connect_timeout"}
# What a store that went away raises: MLflow's errors, or the HTTP client's underneath.
STORE_ERRORS = (MlflowException, requests.RequestException, OSError)
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Patience:
    """How long calls to an http(s) tracking server that does not answer are tried again."""

    retries: int  # by MLflow's client, per request: sleeps of 0, 2, 4, 8, 16 s (backoff 1)
    wait_s: float  # at a job's start, for the server to answer at all


# A run started at a terminal fails within seconds (its user is there to start the server);
# a sweep's calls outlast a server restart: about 30 s of retries, as long a wait to start.
AT_ONCE = Patience(retries=2, wait_s=0.0)
IN_A_SWEEP = Patience(retries=5, wait_s=30.0)

# MLflow 3.17's UI keeps a GenAI / Model training switch per browser, GenAI until flipped; this
# query parameter opens a page in Model training whatever the browser last chose.
MODEL_TRAINING_VIEW = "workflowType=machine_learning"
VERSIONED = ("torch", "transformers", "peft", "datasets", "mlflow")
DATASET_ATTEMPTS = 3
# What a server with authentication answers a user it turns away, as MLflow's error codes.
REFUSALS = {
    "UNAUTHENTICATED": "HTTP 401: wrong user name or password",
    "PERMISSION_DENIED": "HTTP 403: this user may not use that experiment",
}
# A unique key refused, as PostgreSQL, SQLite and MySQL word it.
DUPLICATE_ROW = re.compile("UniqueViolation|UNIQUE constraint failed|Duplicate entry")


def use_store(cfg: TrackingConfig, patience: Patience = AT_ONCE) -> str:
    """Point MLflow at the configured store and experiment; returns the experiment id. A
    server is waited for and its requests retried as ``patience`` says.

    Both are created here, under the store's lock: processes started at once on a fresh store
    would otherwise race to create its schema, or the same experiment.
    """
    require_reachable(cfg.uri, patience.wait_s)
    retry_requests(cfg.uri, patience)
    with store_lock(cfg.uri), admitted(cfg.uri):
        mlflow.set_tracking_uri(cfg.uri)
        try:
            experiment = mlflow.get_experiment_by_name(cfg.experiment)
            if experiment is not None:
                experiment_id = experiment.experiment_id
            else:
                experiment_id = create_experiment(cfg)
        except UnsupportedModelRegistryStoreURIException as error:
            schemes = "sqlite:///PATH, file:///PATH, http(s)://HOST:PORT, postgresql://..."
            raise PeftlabError(
                f"tracking.uri={cfg.uri!r} is not allowed: an MLflow store URI ({schemes})"
            ) from error
    mlflow.set_experiment(experiment_id=experiment_id)
    if names.EXPERIMENT_KIND_TAG not in mlflow.get_experiment(experiment_id).tags:  # made elsewhere
        try:
            mlflow.set_experiment_tag(names.EXPERIMENT_KIND_TAG, names.EXPERIMENT_KIND)
        except MlflowException as error:  # another process tagged it at the same moment
            if not DUPLICATE_ROW.search(str(error)):
                raise
    return experiment_id


@contextmanager
def admitted(uri: str) -> Iterator[None]:
    """Within: a server that turns this user away (``--app-name basic-auth``) is one line."""
    try:
        yield
    except MlflowException as error:
        if error.error_code not in REFUSALS:
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = f"MLFLOW_TRACKING_USERNAME={user!r}" if user else "a request without a user"
        raise PeftlabError(
            f"tracking.uri={uri!r}: the server refused {who} "
            f"({REFUSALS[error.error_code]}); set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD to an account of that server"
        ) from None


def create_experiment(cfg: TrackingConfig) -> str:
    """Create the experiment. On a server's database no file lock reaches the other processes:
    one created it at the same moment, so the store refused ours: use theirs."""
    location = artifact_location(cfg)
    try:
        return mlflow.create_experiment(
            cfg.experiment,
            artifact_location=location,
            tags={names.EXPERIMENT_KIND_TAG: names.EXPERIMENT_KIND},
        )
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return mlflow.get_experiment_by_name(cfg.experiment).experiment_id


def artifact_location(cfg: TrackingConfig) -> str | None:
    """The configured folder, else for a SQLite store ``artifacts/`` beside its database (MLflow
    would use ./mlruns of whichever folder a process started in); else the store decides."""
    if cfg.artifact_location:
        return Path(cfg.artifact_location).resolve().as_uri()
    parsed = urlparse(cfg.uri)
    if parsed.scheme == "sqlite" and parsed.path not in {"", "/:memory:"}:
        return (Path(parsed.path).parent / "artifacts").resolve().as_uri()
    return None


def require_reachable(uri: str, wait_s: float = AT_ONCE.wait_s) -> None:
    """The store answers: an http(s) server within ``wait_s``, a database at its first
    connection; else one line (PeftlabError). Nothing to check for a local store."""
    require_server(uri, wait_s)
    require_database(uri)


def require_server(uri: str, wait_s: float) -> None:
    """For an http(s) store, a quick request first, again for up to ``wait_s``: MLflow's own
    client retries an absent server for minutes before it fails."""
    if urlparse(uri).scheme not in {"http", "https"}:
        return
    deadline = time.monotonic() + wait_s
    while True:
        try:
            urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S)
            return
        except urllib.error.HTTPError:
            return  # something answered (a proxy, an auth wall): MLflow's client takes it on
        except (urllib.error.URLError, TimeoutError, OSError) as error:
            if time.monotonic() < deadline:
                time.sleep(SERVER_POLL_S)
                continue
            reason = getattr(error, "reason", error)
            raise PeftlabError(
                f"tracking.uri={uri!r}: no MLflow server answers there ({reason}); start one "
                "(`mlflow server --host 127.0.0.1 --port 5000`) or leave tracking.uri unset "
                "for the local store in mlruns/"
            ) from error


def retry_requests(uri: str, patience: Patience) -> None:
    """MLflow's client retries each request to an http(s) server as ``patience`` says, from
    now on in this process: MLflow reads these variables at every request (peftlab's values
    replace a user's own)."""
    if urlparse(uri).scheme not in {"http", "https"}:
        return
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(patience.retries)
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "20"  # a request the server never answers


def require_database(uri: str) -> None:
    """For a PostgreSQL or MySQL store, one connection attempt first (a few seconds at most):
    MLflow's engine retries a database it cannot reach for about two minutes, then fails with a
    traceback. The message is one line, the URI's password masked (PeftlabError)."""
    timeout = CONNECT_TIMEOUT_ARGS.get(urlparse(uri).scheme.split("+")[0])  # postgresql+psycopg
    if timeout is None:
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        engine = sqlalchemy.create_engine(
            uri, poolclass=NullPool, connect_args={timeout: DATABASE_TIMEOUT_S}
        )
        with engine.connect():
            pass
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:  # a port that is no number
        raise PeftlabError(
            f"tracking.uri={uri!r} is not a database URL ({error}); the form is "
            f"{urlparse(uri).scheme}://USER:***@HOST:PORT/DATABASE"
        ) from None
    except ImportError as error:  # the URL's driver, not installed
        raise PeftlabError(
            f"tracking.uri={uri!r}: its database driver is not installed ({error}); install it "
            "in this environment, or leave tracking.uri unset for the local store in mlruns/"
        ) from None
    except sqlalchemy.exc.DBAPIError as error:
        # The driver's first line (psycopg adds a hint on the next: our own follows instead).
        reason = " ".join(str(error.orig).split("\n", 1)[0].split()) or type(error.orig).__name__
        raise PeftlabError(
            f"tracking.uri={uri!r}: cannot connect to the database ({reason}); check its host, "
            "port, database, user and password, and that its server runs, or leave tracking.uri "
            "unset for the local store in mlruns/"
        ) from None


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """For a SQLite store, an exclusive lock (``<db>.lock``, its folder created) while MLflow
    creates or migrates the schema on first access; other stores serialize on their own."""
    parsed = urlparse(uri)
    if parsed.scheme != "sqlite" or parsed.path in {"", "/:memory:"}:
        yield
        return
    database = Path(parsed.path)
    database.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{database}.lock"):
        yield


def client(uri: str) -> MlflowClient:
    """A client of the store at ``uri``, its schema created or migrated under the lock."""
    with store_lock(uri), admitted(uri):
        opened = MlflowClient(uri)
        opened.search_experiments(max_results=1)  # the first access creates the schema
    return opened


@contextmanager
def run(
    cfg: TrackingConfig, name: str | None, tags: dict[str, str], resume: str | None = None
) -> Iterator[Run]:
    """An MLflow run (the unfinished run ``resume`` again, if given) that ends FINISHED, KILLED
    when interrupted, or FAILED with the error as its ``error`` tag; with ``cfg.system_metrics``,
    MLflow samples the machine's use into ``system/*`` metrics."""
    if cfg.system_metrics:
        mlflow.set_system_metrics_sampling_interval(cfg.system_metrics_interval_s)
    with interrupts.deferred():
        started = mlflow.start_run(
            run_id=resume,
            run_name=None if resume else name,
            tags=tags,
            log_system_metrics=cfg.system_metrics,
        )
    try:
        yield started
    except interrupts.Interrupted as interrupt:
        _end_if_reachable(cfg, "KILLED", f"interrupted by {interrupt.signal_name}")
        raise
    except BaseException as error:
        _end_if_reachable(cfg, "FAILED", f"{type(error).__name__}: {error}"[:5000])
        raise
    try:
        mlflow.end_run("FINISHED")
    except STORE_ERRORS as error:
        raise PeftlabError(f"could not end the run in {cfg.uri}: {short(error)}") from error


def _end_if_reachable(cfg: TrackingConfig, status: str, error: str) -> None:
    """End the run with its error, unless the store is what failed: the error says it all."""
    run_id = mlflow.active_run().info.run_id
    try:
        mlflow.set_tag(names.ERROR_TAG, redact(error))
        mlflow.end_run(status)
    except STORE_ERRORS as unreachable:
        log.warning("Could not end the run in %s: %s", redact(cfg.uri), short(unreachable))
        _leave_unended(run_id)


def _leave_unended(run_id: str) -> None:
    """Leave a run its store can't end: off MLflow's stack of active runs, and its system
    metrics sampler stopped (MLflow's end_run stops at the store first and leaves the sampler
    writing warnings after the run's error line); its last samples can't be sent."""
    with suppress(*STORE_ERRORS):
        if mlflow.active_run() is not None:
            mlflow.end_run()  # off the stack, then fails at the store
    sampler = fluent.run_id_to_system_metrics_monitor.pop(run_id, None)
    if sampler is not None:
        sampler_log = logging.getLogger("mlflow.system_metrics")
        level = sampler_log.level
        sampler_log.setLevel(logging.CRITICAL)  # its flush fails: the store is gone
        try:
            sampler.finish()
        finally:
            sampler_log.setLevel(level)


def end_dead_workers_run(client: MlflowClient, run_id: str, worker: str) -> None:
    """The run of a search's trial whose worker died (the trial failed, to be retried): tagged
    ``worker_died`` with the worker's host:pid, which keeps it out of the parent's results, and
    ended KILLED unless it had ended."""
    client.set_tag(run_id, names.WORKER_DIED_TAG, worker)
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_terminated(run_id, "KILLED")


def short(error: BaseException) -> str:
    """The first line of an error, as long as a line should be, with no password in it."""
    text = redact(str(error)).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config as dotted keys (``peft.num_virtual_tokens``), values as MLflow params."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{dotted}."))
        else:
            flat[dotted] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def log_dataset(frame: pd.DataFrame, cfg: DatasetConfig, context: str) -> None:
    """The rows a run used (the columns its format reads), as an MLflow dataset (source, digest,
    row count) in ``context`` (``training`` or ``evaluation``): the UI's Dataset column and
    filter. Lists (a chat's messages, a quote's tags) are logged as JSON text."""
    held_out = context == "evaluation"
    file = cfg.eval_data_files if held_out and cfg.eval_data_files else cfg.data_files
    split = cfg.eval_split if held_out and cfg.eval_split else cfg.split
    if file and not (held_out and cfg.eval_split):
        source = str(Path(file).expanduser().resolve())
    else:
        source = HuggingFaceDatasetSource(path=cfg.path, split=split, revision=cfg.revision)
    frame = frame.map(lambda value: json.dumps(value) if isinstance(value, list) else value)
    dataset = mlflow.data.from_pandas(frame, source=source, name=cfg.name)
    for attempt in range(DATASET_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context)
            return
        except MlflowException as error:
            # Jobs that log the same rows at the same moment race to insert one dataset row in
            # the experiment; the losers' database refuses theirs. Again, they find it there.
            if attempt + 1 == DATASET_ATTEMPTS or not DUPLICATE_ROW.search(str(error)):
                raise
            time.sleep(0.2 * (attempt + 1))


def environment_tags() -> dict[str, str]:
    """Versions of Python and the libraries that decide a run's numbers, and the device."""
    import torch

    return {**library_versions(), names.DEVICE_TAG: device_name(torch)}


def library_versions() -> dict[str, str]:
    versions = {names.PYTHON_VERSION_TAG: platform.python_version()}
    return versions | {f"{name}_version": metadata.version(name) for name in VERSIONED}


def version_differences(tags: dict[str, str]) -> list[str]:
    """``name now (run: then)`` for each version a run recorded that differs from this one's."""
    return [
        f"{key.removesuffix('_version')} {now} (run: {tags[key]})"
        for key, now in library_versions().items()
        if key in tags and tags[key] != now
    ]


def device_name(torch) -> str:
    """The GPU's name, or the CPU's model name (hosts of one cloud family differ: say which)."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return f"CPU: {names[0] if names else platform.processor() or platform.machine()}"


def installed_packages() -> str:
    """Every installed distribution as ``name==version``, one per line (as ``pip freeze``);
    of a package installed twice, the one imports find first on ``sys.path``."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():  # in sys.path order
        # The headers only: dist.metadata and dist.version parse each long description too.
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO") or ""
        headers = HeaderParser().parsestr(text.split("\n\n", 1)[0])
        if headers["Name"]:
            found.setdefault(headers["Name"], headers["Version"])
    return "".join(f"{name}=={found[name]}\n" for name in sorted(found, key=str.lower))


def git_commit(directory: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=directory, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return result.stdout.strip()


def ui_hint(cfg: TrackingConfig, active: Run) -> str:
    info = active.info
    where = f"#/experiments/{info.experiment_id}/runs/{info.run_id}?{MODEL_TRAINING_VIEW}"
    return ui_address(cfg.uri, where)


def ui_address(uri: str, where: str) -> str:
    """Where the UI of the store ``uri`` shows ``where`` (a ``#/...`` route)."""
    if urlparse(uri).scheme in {"http", "https"}:
        return f"{redact(uri).rstrip('/')}/{where}"
    return f"`make ui`, then http://127.0.0.1:5000/{where}"


def latest_parent(client: MlflowClient, tag: str) -> Run | None:
    """The most recently started sweep parent run that carries ``tag``, in any experiment."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(
        experiments, f"tags.`{tag}` != ''", order_by=["start_time DESC"], max_results=1
    )
    return found[0] if found else None

"""The ``peftlab`` command: compare a sweep's runs, rerun a run from its saved config."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from peftlab import compare
from peftlab.errors import PeftlabError

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


def default_tracking_uri() -> str:
    """The store train.py writes to when launched from the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI", f"sqlite:///{Path.cwd()}/mlruns/mlflow.db")


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="peftlab", description=__doc__)
    root.add_argument("--tracking-uri", default=None, help="MLflow store (default: ./mlruns)")
    commands = root.add_subparsers(dest="command", required=True)

    comparing = commands.add_parser("compare", help="rank a sweep's runs by held-out eval loss")
    which = comparing.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="the sweep's parent run id (default: the latest sweep)")
    which.add_argument("--experiment", help="compare all runs of this MLflow experiment")
    comparing.add_argument("--out", type=Path, help="output folder (default: outputs/compare/ID)")

    rerunning = commands.add_parser("rerun", help="run a run again from its saved config")
    rerunning.add_argument("run_id")
    rerunning.add_argument(
        "overrides", nargs="*", help="Hydra overrides on top of the saved config"
    )
    return root


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    client = MlflowClient(args.tracking_uri or default_tracking_uri())
    try:
        if args.command == "compare":
            return run_compare(client, args)
        return rerun(client, args.run_id, args.overrides)
    except PeftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run_compare(client: MlflowClient, args: argparse.Namespace) -> int:
    comparison = compare.collect(client, sweep=args.sweep, experiment=args.experiment)
    name = comparison.parent.info.run_id if comparison.parent else args.experiment
    files = compare.write(comparison, client, args.out or Path("outputs", "compare", name))
    compare.log_to_parent(client, comparison, files)
    print(compare.console_table(comparison))
    print("\nWrote " + ", ".join(str(f) for f in files))
    return 0


def rerun(client: MlflowClient, run_id: str, overrides: list[str]) -> int:
    """Launch train.py on the run's saved ``.hydra/config.yaml``; returns its exit code."""
    try:
        client.get_run(run_id)
    except MlflowException as error:
        raise PeftlabError(f"run {run_id!r} not found in {client.tracking_uri}") from error
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config_dir = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=".hydra",
                dst_path=tmp,
                tracking_uri=client.tracking_uri,
            )
        except (MlflowException, OSError) as error:
            raise PeftlabError(f"run {run_id!r} has no saved .hydra/ config to rerun") from error
        command = [
            sys.executable,
            str(TRAIN_SCRIPT),
            "--config-path",
            config_dir,
            "--config-name",
            "config",
            f"+tracking.tags.rerun_of={run_id}",
            *overrides,
        ]
        return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

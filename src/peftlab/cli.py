"""The peftlab command: compare sweeps, rerun and resume runs, generate with tuned adapters,
demo, dashboard."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from peftlab import names
from peftlab.config import TrackingConfig, local_store_uri
from peftlab.errors import PeftlabError
from peftlab.schema import register_configs

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

# Each command imports the heavy libraries it needs (mlflow, torch, gradio): `--help` and a
# mistyped argument answer at once.

TRAIN_SCRIPT = Path(__file__).resolve().parents[2] / "train.py"


def default_tracking_uri() -> str:
    """The store train.py writes to when launched from the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="peftlab", description=__doc__)
    root.add_argument("--tracking-uri", default=None, help="MLflow store (default: ./mlruns)")
    commands = root.add_subparsers(dest="command", required=True)
    add_compare(commands)
    add_generate(commands)
    add_browser_apps(commands)
    add_reruns(commands)
    return root


def add_compare(commands: argparse._SubParsersAction) -> None:
    comparing = commands.add_parser("compare", help="rank a sweep's runs by a held-out metric")
    which = comparing.add_mutually_exclusive_group()
    which.add_argument("--sweep", help="the sweep's parent run id (default: the latest sweep)")
    which.add_argument("--experiment", help="compare all runs of this MLflow experiment")
    comparing.add_argument("--out", type=Path, help="output folder (default: outputs/compare/ID)")
    comparing.add_argument(
        "--metric",
        default=names.EVAL_LOSS,
        help="rank by this metric, best first (e.g. eval_rougeL, eval_chrf; default: eval_loss)",
    )
    comparing.add_argument(
        "--pareto",
        metavar="A,B",
        help="mark the runs on the Pareto frontier of two metrics, each better in its own "
        f"direction (e.g. {names.EVAL_LOSS},{names.PEAK_MEMORY_BYTES}), and plot it",
    )
    comparing.add_argument(
        "--open",
        action="store_true",
        help="open the comparison in the MLflow UI (a browser on its link; `make ui` first for "
        "a local store)",
    )
    comparing.add_argument(
        "--register",
        metavar="NAME",
        help="register the best run's model as NAME; alias 'champion' on the best so far",
    )


def add_generate(commands: argparse._SubParsersAction) -> None:
    generating = commands.add_parser("generate", help="generate with tuned adapters")
    generating.add_argument(
        "--run", action="append", required=True, help="MLflow run id or adapter folder; repeatable"
    )
    given = generating.add_mutually_exclusive_group(required=True)
    given.add_argument("--prompt", help="the text to continue, as it is")
    given.add_argument(
        "--input",
        action="append",
        metavar="NAME=VALUE",
        help="an input of a task run, put into the run's own template (e.g. act=Poet; a chat "
        "run's user=...); repeatable",
    )
    generating.add_argument("--compare", action="store_true", help="add the untuned base output")
    generating.add_argument("--max-new-tokens", type=int)
    generating.add_argument("--repetition-penalty", type=float)
    generating.add_argument("--temperature", type=float)
    generating.add_argument("--top-p", type=float)
    generating.add_argument("--do-sample", action="store_true", default=None)


def add_browser_apps(commands: argparse._SubParsersAction) -> None:
    """The demo (Gradio) and the study's dashboard (optuna-dashboard), served on loopback."""
    demoing = commands.add_parser("demo", help="Gradio app to try tuned adapters in a browser")
    demoing.add_argument("--experiment", default=TrackingConfig.experiment)
    demoing.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    demoing.add_argument("--port", type=int, default=7860)
    dashboard = commands.add_parser(
        "dashboard", help="optuna-dashboard on the study of the latest search (or the one named)"
    )
    dashboard.add_argument(
        "--storage", help="the study's storage (default: the latest search's, from its run)"
    )
    dashboard.add_argument("--study", help="the study's name (default: the latest search's)")
    dashboard.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback)")
    dashboard.add_argument("--port", type=int, default=8080)


def add_reruns(commands: argparse._SubParsersAction) -> None:
    rerunning = commands.add_parser("rerun", help="run a run again from its saved config")
    rerunning.add_argument("run_id")
    rerunning.add_argument(
        "overrides", nargs="*", help="Hydra overrides on top of the saved config"
    )
    resuming = commands.add_parser(
        "resume", help="continue an interrupted run from its last checkpoint, as the same run"
    )
    resuming.add_argument("run_id")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from peftlab import console, tracking

    register_configs()
    console.quiet_libraries()
    client = tracking.client(args.tracking_uri or default_tracking_uri())
    commands = {
        "compare": run_compare,
        "generate": run_generate,
        "demo": run_demo,
        "dashboard": run_dashboard,
    }
    try:
        if args.command == "rerun":
            return rerun(client, args.run_id, args.overrides)
        if args.command == "resume":
            return resume(client, args.run_id)
        return commands[args.command](client, args)
    except PeftlabError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def run_generate(client: MlflowClient, args: argparse.Namespace) -> int:
    from peftlab import adapter_sources, console

    # A mistyped run or input is answered before torch, peft and the base model load.
    sources = [adapter_sources.resolve(spec, client) for spec in args.run]
    inputs = dict(adapter_sources.name_value(item) for item in args.input or [])
    overrides = {
        "max_new_tokens": args.max_new_tokens,
        "repetition_penalty": args.repetition_penalty,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "do_sample": args.do_sample,
    }
    from peftlab.adapters import AdapterBank

    bank = AdapterBank.for_sources(sources)

    def prompt(source: adapter_sources.AdapterSource) -> str:
        return source.prompt(inputs, bank.loaded.tokenizer) if inputs else args.prompt

    outputs = []
    if args.compare:
        settings = adapter_sources.with_overrides(sources[0].generation, **overrides)
        outputs.append((f"untuned {bank.base}", bank.generate(prompt(sources[0]), settings)))
    for source in sources:
        settings = adapter_sources.with_overrides(source.generation, **overrides)
        loss = f" (eval_loss {source.eval_loss:.4f})" if source.eval_loss is not None else ""
        text = bank.generate(prompt(source), settings, source.name)
        outputs.append((source.label + loss, text))
    shown = args.prompt or ", ".join(f"{k}={v}" for k, v in inputs.items())
    print(console.side_by_side(shown, outputs))
    return 0


def run_demo(client: MlflowClient, args: argparse.Namespace) -> int:
    from peftlab import demo  # gradio is slow to import; only this command needs it

    demo.build(client, args.experiment).launch(server_name=args.host, server_port=args.port)
    return 0


def run_dashboard(client: MlflowClient, args: argparse.Namespace) -> int:
    """optuna-dashboard on loopback, opened on the search's study."""
    import optuna_dashboard

    from peftlab import study

    storage, name = args.storage, args.study
    if storage is None or name is None:
        recorded_storage, recorded_name = latest_search(client)
        storage, name = storage or recorded_storage, name or recorded_name
    if "***" in storage:
        raise PeftlabError(
            f"the latest search's storage {storage} needs its password: pass it with "
            "--storage URL (e.g. postgresql+psycopg://USER:$PGPASSWORD@HOST/DB)"
        )
    opened = study.open_storage(study.storage_spec(storage, Path.cwd()))
    try:
        study_id = opened.get_study_id_from_name(name)
    except KeyError as error:
        raise PeftlabError(f"--study={name!r}: no such study in {storage}") from error
    url = f"http://{args.host}:{args.port}/dashboard/studies/{study_id}"
    print(f"optuna-dashboard for study {name!r} on {url} (Ctrl-C stops it)", flush=True)
    optuna_dashboard.run_server(opened, host=args.host, port=args.port)
    return 0


def latest_search(client: MlflowClient) -> tuple[str, str]:
    """The storage and study name recorded on the latest search's parent run."""
    from peftlab.tracking import latest_parent

    found = latest_parent(client, names.STUDY_TAG)
    if found is None:
        raise PeftlabError(
            "no search found in this store: run one with `python train.py -m "
            "hparams_search=optuna`, or pass --storage and --study"
        )
    return found.data.tags[names.STORAGE_TAG], found.data.tags[names.STUDY_TAG]


def run_compare(client: MlflowClient, args: argparse.Namespace) -> int:
    from peftlab import compare, pareto

    pair = pareto.parse(args.pareto) if args.pareto is not None else None
    comparison = compare.collect(
        client, sweep=args.sweep, experiment=args.experiment, metric=args.metric, pareto=pair
    )
    name = comparison.parent.info.run_id if comparison.parent else args.experiment
    out = args.out or Path("outputs", "compare", name)
    files = compare.write(comparison, client, out)
    compare.log_to_parent(client, comparison, files)
    print(compare.console_table(comparison))
    print(f"\nWrote {out}{os.sep}: " + ", ".join(f.name for f in files))
    from peftlab import shared_view

    link = shared_view.link(client, comparison)
    print(f"MLflow UI: {link}")
    if args.open:
        import webbrowser

        webbrowser.open(link[link.index("http") :])  # a local store's: after `make ui`
    if args.register:
        from peftlab import registry

        print("Registered " + registry.register_best(client, comparison, args.register))
    return 0


def find_run(client: MlflowClient, run_id: str) -> Run:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise PeftlabError(f"run {run_id!r} not found in {client.tracking_uri}") from error


def rerun(client: MlflowClient, run_id: str, overrides: list[str]) -> int:
    """Launch train.py on the run's saved ``.hydra/config.yaml``; returns its exit code."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from peftlab import tracking

    run = find_run(client, run_id)
    differences = tracking.version_differences(run.data.tags)
    if differences:
        print(
            f"note: versions differ from run {run_id}'s: {', '.join(differences)}", file=sys.stderr
        )
    with tempfile.TemporaryDirectory() as tmp:
        try:
            config_dir = mlflow.artifacts.download_artifacts(
                run_id=run_id,
                artifact_path=names.CONFIG_DIR,
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


def resume(client: MlflowClient, run_id: str) -> int:
    """Launch train.py on the run's own folder and config, continuing the same MLflow run."""

    run = find_run(client, run_id)
    if run.info.status == "FINISHED":
        raise PeftlabError(f"run {run_id} is FINISHED: nothing to resume")
    run_dir = Path(run.data.tags.get(names.RUN_DIR_TAG, ""))
    if not (run_dir / names.CONFIG_DIR / names.CONFIG_FILE).is_file():
        raise PeftlabError(
            f"run {run_id}: its folder {str(run_dir) or '(not recorded)'} with .hydra/config.yaml "
            f"is not on this machine; `peftlab rerun {run_id}` trains it again"
        )
    command = [
        sys.executable, str(TRAIN_SCRIPT), "--config-path", str(run_dir / names.CONFIG_DIR),
        "--config-name", "config", f"hydra.run.dir={run_dir}", f"resume={run_id}",
    ]  # fmt: skip
    return subprocess.run(command, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())

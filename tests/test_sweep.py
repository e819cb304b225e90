"""Multirun sweeps: grouping in MLflow, isolation of failures, launchers and sweepers."""

from pathlib import Path

import httpx
import optuna
import pytest
from helpers.configs import CONF_DIR, tiny_overrides
from helpers.matrices import CORE_METHODS
from helpers.runners import run_sweep, run_train, train_in_process
from helpers.servers import mlflow_server
from helpers.stores import new_store, store_runs, sweep_parts
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from peftlab import names, search, shared_view, sweep
from peftlab.config import SAMPLES_DIR
from peftlab.methods import REGISTRY
from peftlab.methods.lora import Lora


def test_sweep_is_one_parent_with_a_child_per_job_named_by_its_overrides(sweep_run: Path):
    _, parent, children = sweep_parts(sweep_run)
    assert parent.info.status == "FINISHED"
    assert (
        parent.data.tags[names.SWEPT_KEYS_TAG] == "peft.num_virtual_tokens,trainer.num_train_epochs"
    )
    assert "peft.num_virtual_tokens=2,4" in parent.data.params["sweep.overrides"]
    assert parent.data.params["peft.prompt_tuning_init"] == "RANDOM"  # the resolved base config
    assert sorted(c.info.run_name for c in children) == [
        "peft.num_virtual_tokens=2,trainer.num_train_epochs=1",
        "peft.num_virtual_tokens=2,trainer.num_train_epochs=2",
        "peft.num_virtual_tokens=4,trainer.num_train_epochs=1",
        "peft.num_virtual_tokens=4,trainer.num_train_epochs=2",
    ]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags[names.SWEEP_ID_TAG] for c in children} == {parent.info.run_id}
    # The result on the parent, for its collapsed row in the UI.
    best = min(children, key=lambda c: c.data.metrics[names.EVAL_LOSS])
    assert parent.data.metrics[names.BEST_EVAL_LOSS] == best.data.metrics[names.EVAL_LOSS]
    assert (parent.data.tags[names.BEST_RUN_ID_TAG], parent.data.tags[names.BEST_RUN_NAME_TAG]) == (
        best.info.run_id,
        best.info.run_name,
    )
    assert (parent.data.tags[names.FINISHED_JOBS_TAG], parent.data.tags[names.FAILED_JOBS_TAG]) == (
        "4",
        "0",
    )
    for child in children:
        tokens = child.data.params["peft.num_virtual_tokens"]
        assert child.info.run_name.startswith(f"peft.num_virtual_tokens={tokens},")


def test_a_finished_sweep_leaves_the_view_its_link_opens_in_the_experiment(sweep_run: Path):
    client, parent, children = sweep_parts(sweep_run)
    tags = client.get_experiment(parent.info.experiment_id).tags
    key = f"{shared_view.TAG_PREFIX}peftlab-{parent.info.run_id}-eval_loss"
    state = shared_view.decode(tags[key])
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'"
    assert state["selectedColumns"][:3] == [
        "params.`peft.num_virtual_tokens`",
        "params.`trainer.num_train_epochs`",
        "metrics.`eval_loss`",
    ]
    colours = {child.data.tags[names.RUN_COLOR_TAG] for child in children}
    assert len(colours) == len(children)


def test_one_sweep_runs_each_method_as_a_finished_child(method_sweep: Path):
    _, parent, children = sweep_parts(method_sweep)
    assert parent.info.status == "FINISHED"
    assert [c.info.run_name for c in children] == [f"peft={option}" for option in CORE_METHODS]
    assert all(c.info.status == "FINISHED" for c in children)
    assert [c.data.tags["peft"] for c in children] == CORE_METHODS


def test_sweep_outputs_live_in_unique_multirun_folders(sweep_run: Path):
    (sweep_dir,) = (sweep_run / "multirun").glob("*/*")
    assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir()) == ["0", "1", "2", "3"]
    assert all((sweep_dir / job / "adapter" / "adapter_config.json").is_file() for job in "0123")
    # Sweeps started within the same second still get their own folder.
    assert len(sweep_dir.name.split("-")[-1]) == 6  # microseconds


def test_job_of_a_sweep_equals_the_same_config_run_alone(sweep_run, tiny_bloom, tmp_path):
    _, _, children = sweep_parts(sweep_run)
    name = "peft.num_virtual_tokens=4,trainer.num_train_epochs=1"
    (job,) = [c for c in children if c.info.run_name == name]
    assert int(job.data.tags[names.JOB_NUM_TAG]) > 0  # ran after another job, on the shared model
    new_store(tmp_path)
    alone = train_in_process(
        *tiny_overrides(tiny_bloom, tmp_path),
        "peft.prompt_tuning_init=RANDOM",
        "peft.num_virtual_tokens=4",
        "trainer.num_train_epochs=1",
        f"hydra.run.dir={tmp_path}/outputs/run",
        cwd=tmp_path,
    )
    assert alone.returncode == 0, alone.stderr[-2000:]
    (single,) = store_runs(tmp_path)[1]
    assert single.data.metrics[names.EVAL_LOSS] == pytest.approx(
        job.data.metrics[names.EVAL_LOSS], abs=1e-6
    )


@pytest.mark.process
def test_failing_job_is_failed_while_the_others_finish(tiny_bloom: Path, tmp_path: Path):
    # A process of its own: Hydra skips the sweep's end on a failed job; the parent run is
    # closed as the process exits.
    result = run_train("-m", *tiny_overrides(tiny_bloom, tmp_path),
                       "dataset.text_column=prompt,nope", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 1
    # Hydra names the job, then the job's one line: no traceback for a value to fix (Hydra's
    # closing hint about HYDRA_FULL_ERROR follows, as after any error of a sweep).
    lines = result.stderr.splitlines()
    (at,) = [i for i, line in enumerate(lines) if line.startswith("Error executing job with")]
    assert "dataset.text_column=nope" in lines[at]
    said = lines[at + 1]
    assert said == (
        f"error: dataset.text_column='nope' is not a column of {SAMPLES_DIR}/prompts.csv; "
        "columns: act, prompt"
    )
    _, parent, (good, bad) = sweep_parts(tmp_path)
    assert good.info.status == "FINISHED"
    assert bad.info.status == "FAILED"
    assert "dataset.text_column='nope' is not a column" in bad.data.tags["error"]
    assert parent.info.status != "RUNNING"
    assert (parent.data.tags[names.FINISHED_JOBS_TAG], parent.data.tags[names.FAILED_JOBS_TAG]) == (
        "1",
        "1",
    )
    assert parent.data.tags[names.BEST_RUN_ID_TAG] == good.info.run_id


@pytest.mark.process
def test_submitit_local_runs_each_job_in_its_own_process(tiny_bloom: Path, tmp_path: Path):
    result = run_sweep(
        tiny_bloom,
        tmp_path,
        "peft.num_virtual_tokens=1,2",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_parts(tmp_path)
    assert [c.info.status for c in children] == ["FINISHED", "FINISHED"]
    (sweep_dir,) = (tmp_path / "multirun").glob("*/*")
    assert len([p for p in (sweep_dir / ".submitit").iterdir() if p.name.isdigit()]) == 2


def test_optuna_search_minimises_eval_loss_over_the_search_space(tiny_bloom, tmp_path):
    result = run_sweep(
        tiny_bloom,
        tmp_path,
        "hparams_search=optuna",
        "hydra.sweeper.n_trials=3",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_parts(tmp_path)
    assert len(children) == 3 and all(c.info.status == "FINISHED" for c in children)
    for child in children:  # the default method's own search space (its module's suggest)
        keys = {part.split("=")[0] for part in child.info.run_name.split(",")}
        assert keys == {
            "peft.num_virtual_tokens",
            "peft.prompt_tuning_init",
            "trainer.learning_rate",
        }
    best = min(c.data.metrics[names.EVAL_LOSS] for c in children)
    assert "Best value: " in result.stderr + result.stdout
    assert f"{best}"[:6] in (result.stderr + result.stdout).split("Best value: ")[1]


def test_search_within_a_method_asks_for_its_own_keys(tiny_llama: Path, tmp_path: Path):
    result = run_sweep(
        tiny_llama,
        tmp_path,
        "hparams_search=optuna-method",
        "peft=lora",
        "hydra.sweeper.n_trials=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children = sweep_parts(tmp_path)
    assert len(children) == 2 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        keys = {part.split("=")[0] for part in child.info.run_name.split(",")}
        assert keys == {"peft.r", "peft.lora_alpha", "peft.lora_dropout", "trainer.learning_rate"}
        rate = float(child.data.params["trainer.learning_rate"])
        span = search.LEARNING_RATE_SPAN
        assert Lora.learning_rate / span <= rate <= Lora.learning_rate * span


def test_search_across_methods_picks_a_method_then_its_keys(tiny_llama: Path, tmp_path: Path):
    candidates = ["prompt-tuning", "lora", "ia3", "loha"]
    result = run_sweep(
        tiny_llama, tmp_path, "hparams_search=optuna-methods", "hydra.sweeper.n_trials=4",
        f"peft={','.join(candidates)}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, parent, children = sweep_parts(tmp_path)
    assert parent.info.status == "FINISHED"
    assert len(children) == 4 and all(c.info.status == "FINISHED" for c in children)
    for child in children:
        method = REGISTRY[child.data.params["peft.method"]]
        assert child.info.run_name.startswith(f"peft={method.option()},")
        assert child.data.tags["peft"] == method.option()
        assert method.option() in candidates
    assert len({c.data.params["peft.method"] for c in children}) > 1


def test_search_across_methods_offers_every_method_unless_told():
    trial = optuna.create_study().ask()
    search.across_methods(OmegaConf.create(), trial)
    offered = trial.distributions[search.METHOD_KEY].choices
    assert sorted(offered) == sorted(method.option() for method in REGISTRY.values())


def test_the_parent_leaves_out_the_runs_of_trials_a_dead_worker_left(tmp_path: Path):
    """Their trials were retried: the parent's results are the study's."""
    new_store(tmp_path)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment_id = client.create_experiment("search")
    parent = client.create_run(experiment_id, tags={names.SWEEP_TAG: "true"}).info.run_id

    def child(status: str, eval_loss: float, worker_died: bool) -> None:
        tags = {names.PARENT_TAG: parent} | ({names.WORKER_DIED_TAG: "n:1"} if worker_died else {})
        run_id = client.create_run(experiment_id, tags=tags).info.run_id
        client.log_metric(run_id, names.EVAL_LOSS, eval_loss)
        client.log_metric(run_id, names.SEARCH_STEPS, 4)
        client.set_terminated(run_id, status)

    child("FINISHED", 2.0, worker_died=False)  # the study's only trial
    child("KILLED", 3.0, worker_died=True)  # its worker killed mid-training
    child("FINISHED", 1.0, worker_died=True)  # killed once the job ended, before its tell
    callback = sweep.MlflowSweepCallback()
    callback._client, callback._parent_id = client, parent
    callback._close("FINISHED")
    ended = client.get_run(parent)
    assert ended.info.status == "FINISHED"
    assert ended.data.metrics[names.BEST_EVAL_LOSS] == 2.0
    assert ended.data.metrics[names.SEARCH_STEPS] == 4
    assert ended.data.tags[names.FINISHED_JOBS_TAG] == "1"


def test_swept_keys_come_from_sweep_overrides_and_search_space():
    keys = sweep.swept_keys(["a=1,2", "b=3", "c=range(1,3)"], {"d": "choice(1, 2)"})
    assert keys == ["a", "c", "d"]


@pytest.mark.process
def test_mlflow_server_on_loopback_serves_the_sweep(sweep_run: Path):
    _, parent, children = sweep_parts(sweep_run)
    with mlflow_server(sweep_run) as base:
        found = httpx.post(
            f"{base}/api/2.0/mlflow/runs/search",
            json={
                "experiment_ids": [parent.info.experiment_id],
                "filter": f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
            },
            timeout=10,
        ).json()["runs"]
    assert {r["info"]["run_id"] for r in found} == {c.info.run_id for c in children}


def test_a_methods_own_keys_are_swept_within_it(tiny_llama: Path, tmp_path: Path):
    """``-m peft=lora peft.r=2,4``: a job per rank, each LoRA adapter of that rank."""
    result = run_sweep(tiny_llama, tmp_path, "peft=lora", "peft.r=2,4",
                       "trainer.num_train_epochs=1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    _, _, children = sweep_parts(tmp_path)
    by_rank = {int(c.data.params["peft.r"]): c.data for c in children}
    assert sorted(by_rank) == [2, 4]
    assert {run.params["peft.method"] for run in by_rank.values()} == {"lora"}
    # A LoRA's A and B matrices grow with its rank: twice the rank, twice the parameters.
    params = {r: run.metrics[names.TRAINABLE_PARAMS] for r, run in by_rank.items()}
    assert params[4] == 2 * params[2] > 0


def test_peft_glob_sweeps_every_method_once():
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        (override,) = OverridesParser.create(config_loader=loader).parse_overrides(["peft=glob(*)"])
        options = list(override.sweep_string_iterator())
    assert sorted(options) == sorted(method.option() for method in REGISTRY.values())

"""peftlab rerun: a run again from its saved config, with the same result."""

import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from wsgiref import simple_server

import optuna
import pytest
from helpers.cluster import free_port
from helpers.configs import tiny_overrides
from helpers.measures import reference_greedy
from helpers.runners import peftlab, peftlab_process, train_in_process
from helpers.stores import new_store, store_runs, sweep_parts

from peftlab import cli, names
from peftlab import study as studies

pytestmark = pytest.mark.process  # rerun launches train.py


@pytest.fixture(scope="module")
def original(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("rerun")
    new_store(work)
    result = train_in_process(*tiny_overrides(tiny_bloom, work), "peft.prompt_tuning_init=RANDOM",
                              f"hydra.run.dir={work}/outputs/run", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    (run,) = store_runs(work)[1]
    return work, run


def test_rerun_reproduces_the_eval_loss(original):
    work, run = original
    result = peftlab_process("rerun", run.info.run_id, cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "versions differ" not in result.stderr  # the same environment
    (rerun,) = [r for r in store_runs(work)[1] if r.data.tags.get("rerun_of") == run.info.run_id]
    assert rerun.info.status == "FINISHED"
    changed = {"output_dir", "tracking.tags.rerun_of"}
    assert {k: v for k, v in rerun.data.params.items() if k not in changed} == {
        k: v for k, v in run.data.params.items() if k != "output_dir"
    }
    assert abs(rerun.data.metrics[names.EVAL_LOSS] - run.data.metrics[names.EVAL_LOSS]) < 1e-5


def test_hydra_rerun_from_the_saved_config_folder(original):
    work, run = original
    config_dir = work / "outputs" / "run" / names.CONFIG_DIR
    result = train_in_process("--config-path", str(config_dir), "--config-name", "config",
                              f"hydra.run.dir={work}/outputs/hydra-rerun", cwd=work)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    newest = max(store_runs(work)[1], key=lambda r: r.info.start_time)
    assert newest.info.run_id != run.info.run_id
    assert abs(newest.data.metrics[names.EVAL_LOSS] - run.data.metrics[names.EVAL_LOSS]) < 1e-5


def test_rerun_says_in_one_line_which_versions_differ(original):
    work, run = original
    client, _ = store_runs(work)
    recorded = run.data.tags["peft_version"]
    client.set_tag(run.info.run_id, "peft_version", "0.1.0")
    try:  # an out-of-range override ends the rerun at once, after the note
        result = peftlab("rerun", run.info.run_id, "trainer.num_train_epochs=0", cwd=work)
    finally:
        client.set_tag(run.info.run_id, "peft_version", recorded)
    (note,) = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert note == (
        f"note: versions differ from run {run.info.run_id}'s: peft {recorded} (run: 0.1.0)"
    )


def test_rerun_of_an_unknown_run_is_one_error_line(original):
    work, _ = original
    result = peftlab("rerun", "0123abcd", cwd=work)  # refused before train.py starts
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"error: run '0123abcd' not found in sqlite:///{work}/mlruns/mlflow.db"
    )


def test_generate_puts_a_task_runs_input_into_its_template(method_sweep, tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from peftlab import cli
    from peftlab.adapter_sources import resolve

    client, _, children = sweep_parts(method_sweep)
    # Prompt tuning: its virtual tokens change the output from the first step (a LoRA this
    # short generates what the base model does).
    (run,) = [c for c in children if c.data.params["peft.method"] == "prompt_tuning"]
    uri = client.tracking_uri
    assert cli.main(["--tracking-uri", uri, "generate", "--run", run.info.run_id,
                     "--input", "act=Poet"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    # What the run's adapter writes after the task's template (conf/dataset/prompts-task) filled
    # with act=Poet: loaded by transformers and peft themselves, decoded greedily token by token
    # with the run's own generation settings.
    params = run.data.params
    adapter = client.download_artifacts(run.info.run_id, names.ADAPTER_DIR, str(tmp_path))
    tokenizer = AutoTokenizer.from_pretrained(params["model.name_or_path"])
    base = AutoModelForCausalLM.from_pretrained(params["model.name_or_path"])
    model = PeftModel.from_pretrained(base, adapter).eval()
    expected = reference_greedy(
        model,
        tokenizer,
        "Role: Poet\nPrompt:\n",
        int(params["generation.max_new_tokens"]),
        float(params["generation.repetition_penalty"]),
    )
    assert expected and printed.endswith(f"\n{expected}\n")  # the run's block, last
    source = resolve(run.info.run_id, client)
    assert cli.main(["--tracking-uri", uri, "generate", "--run", run.info.run_id,
                     "--input", "role=Poet"]) == 1  # fmt: skip
    error = capsys.readouterr().err.strip()
    assert error == (
        f"error: --run {source.label!r}: inputs role given; the run's dataset.format=completion "
        "takes act (as NAME=VALUE)"
    )


def test_generate_samples_with_do_sample_top_p_and_temperature(original):
    import torch

    work, run = original
    uri = f"sqlite:///{work}/mlruns/mlflow.db"

    def generate(*flags: str, seed: int = 0) -> str:
        torch.manual_seed(seed)
        result = peftlab("--tracking-uri", uri, "generate", "--run", run.info.run_id,
                         "--prompt", "I want you to act as", "--max-new-tokens", "12", *flags,
                         cwd=work)  # fmt: skip
        assert result.returncode == 0, result.stderr[-2000:]
        return result.stdout

    greedy = generate()
    assert len({generate("--do-sample", seed=seed) for seed in range(3)}) > 1
    # Nucleus sampling's smallest mass keeps the likeliest token only: greedy decoding again.
    assert generate("--do-sample", "--top-p", "1e-9", seed=1) == greedy
    assert generate("--do-sample", "--temperature", "1e-4", seed=2) == greedy


def test_dashboard_serves_the_study_named_by_its_flags(tmp_path: Path, monkeypatch):
    import optuna
    import optuna_dashboard

    from peftlab import study as studies

    journal = tmp_path / "studies.journal"
    storage = studies.open_storage(f"journal:{journal}")
    for name in ("first", "second"):
        optuna.create_study(study_name=name, storage=storage).optimize(lambda t: 1.0, n_trials=1)
    second_id = storage.get_study_id_from_name("second")
    served = []
    monkeypatch.setattr(optuna_dashboard, "run_server",
                        lambda opened, host, port: served.append((opened, host, port)))  # fmt: skip
    result = peftlab("dashboard", "--storage", f"journal:{journal}", "--study", "second",
                     "--port", "8123", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"http://127.0.0.1:8123/dashboard/studies/{second_id}" in result.stdout
    ((opened, host, port),) = served
    assert (host, port) == ("127.0.0.1", 8123)
    assert opened.get_study_id_from_name("second") == second_id  # the journal given


@contextmanager
def serving_in_a_thread(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> Iterator[None]:
    """``peftlab ARGV`` (a command that serves, as ``dashboard``) in this process, from a thread,
    its server listening within the block; shut down after, and the command must end well."""
    servers: list[simple_server.WSGIServer] = []
    make_server = simple_server.make_server

    def kept(*args, **kwargs) -> simple_server.WSGIServer:
        servers.append(make_server(*args, **kwargs))
        return servers[-1]

    # optuna-dashboard serves with bottle, which makes its wsgiref server out of reach: kept
    # here, to shut it down (its socket listens from the moment it is made).
    monkeypatch.setattr(simple_server, "make_server", kept)
    ended: list[int] = []
    thread = threading.Thread(target=lambda: ended.append(cli.main(argv)), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not servers:
        assert thread.is_alive() and time.monotonic() < deadline, "no server was started"
        time.sleep(0.05)
    try:
        yield
    finally:
        servers[0].shutdown()
        thread.join(timeout=30)
        servers[0].server_close()
    assert ended == [0]


def fetched(url: str):
    """What ``url`` answers, from JSON."""
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.load(answer)


def half_of_x_trial_1_pruned(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", 0.0, 1.0)
    if trial.number == 1:
        raise optuna.TrialPruned()
    return x / 2


def test_the_dashboard_serves_the_latest_searchs_trials_over_http(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    """What the browser test sees in Chromium, here as optuna-dashboard's JSON API answers it."""
    from mlflow.tracking import MlflowClient

    # The search's study second in its journal: the other one's trial tells them apart.
    journal = f"journal:{tmp_path / 'search.journal'}"
    storage = studies.open_storage(journal)
    optuna.create_study(study_name="another", storage=storage).optimize(lambda t: 9.0, n_trials=1)
    search = optuna.create_study(study_name="search", storage=storage)
    search.optimize(half_of_x_trial_1_pruned, n_trials=3)
    study_id = storage.get_study_id_from_name("search")
    new_store(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlruns/mlflow.db"
    tags = {names.STUDY_TAG: "search", names.STORAGE_TAG: journal}
    MlflowClient(uri).create_run("0", tags=tags)  # the search's parent run
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = ["--tracking-uri", uri, "dashboard", "--port", str(port)]  # the study from the run
    with serving_in_a_thread(monkeypatch, argv):
        listed = fetched(f"{base}/api/studies")["study_summaries"]
        served = fetched(f"{base}/api/studies/{study_id}")
        with urllib.request.urlopen(f"{base}/dashboard/studies/{study_id}", timeout=30) as page:
            html = page.read().decode()
    url = f"{base}/dashboard/studies/{study_id}"
    assert capsys.readouterr().out.startswith(f"optuna-dashboard for study 'search' on {url} ")
    assert '<div id="dashboard">' in html  # the page the URL printed opens
    assert {s["study_name"]: s["study_id"] for s in listed} == {"another": 0, "search": study_id}
    assert served["name"] == "search"
    trials = [(t["number"], t["state"], t.get("values")) for t in served["trials"]]
    assert trials == [(t.number, t.state.name.capitalize(), t.values) for t in search.trials]
    assert [state for _, state, _ in trials] == ["Complete", "Pruned", "Complete"]

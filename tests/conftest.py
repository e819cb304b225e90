"""Tiny models built on the fly and the real config tree composed with small overrides."""

from __future__ import annotations

import csv
import functools
import gc
import io
import json
import logging
import logging.config
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path

import cluster
import gguf
import httpx
import pytest
import torch
from cluster import free_port  # one helper for the tests and `make cluster`
from hydra import compose, initialize_config_dir
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf
from peft import PeftModel
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    BloomConfig,
    BloomForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

from peftlab import cli, data, modeling, pipeline, tracking, training
from peftlab.config import SAMPLES_DIR, ModelConfig
from peftlab.pipeline import RunContext, RunResult
from peftlab.schema import register_configs, to_settings
from peftlab.shared import Shared

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"

register_configs()

# Session fixtures that start processes: joblib's workers, PostgreSQL, Slurm, an MLflow server.
# A test using one is a `process` test like those marked so; `make test-fast` leaves them out.
PROCESS_FIXTURES = {"pruned_search", "postgres", "slurm", "mlflow_on_postgres"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if PROCESS_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.process)


def pytest_collection_finish() -> None:
    """Every run's Trainer.train calls gc.collect() (accelerate's free_memory): in this process,
    which holds every library the tests import, ~0.5 s of a tiny run's ~1.4 s. What is alive
    now (modules, classes, functions) is not garbage: frozen, later collections pass it by."""
    gc.freeze()


def sample_texts() -> list[str]:
    with open(SAMPLES_DIR / "prompts.csv", newline="") as f:
        prompts = [row["prompt"] for row in csv.DictReader(f)]
    with open(SAMPLES_DIR / "quotes.jsonl") as f:
        quotes = [json.loads(line)["quote"] for line in f]
    return prompts + quotes


@pytest.fixture(autouse=True)
def tracking_uri_from_config_only():
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; keep one test's store from leaking
    into the next test's subprocesses (the peftlab command honours that variable)."""
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture(scope="session")
def bpe() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=512,
        special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(sample_texts(), trainer)
    return tokenizer


@pytest.fixture(scope="session")
def tiny_bloom(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer BLOOM whose tokenizer already has a pad token distinct from EOS."""
    path = tmp_path_factory.mktemp("tiny-bloom")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    config = BloomConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        n_layer=2,
        n_head=4,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)  # the same random model on every run: tests stay deterministic
    BloomForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama whose tokenizer pads with EOS and has no unk (as SmolLM2-like)."""
    path = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", pad_token="</s>"
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


# ChatML, as SmolLM2-Instruct's template renders a conversation (without its default system).
CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="session")
def tiny_gguf(bpe: Tokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random 2-layer Llama as a GGUF file (fp32, tied embeddings, a byte-level BPE
    tokenizer), laid out as SmolLM2's: what the conversion cache needs, in kilobytes."""
    path = tmp_path_factory.mktemp("tiny-gguf") / "tiny-llama.F32.gguf"
    hidden, layers, heads, kv_heads, ffn = 32, 2, 4, 2, 64
    model = json.loads(bpe.to_str())["model"]
    tokens = [token for token, _ in sorted(model["vocab"].items(), key=lambda item: item[1])]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(layers)
    writer.add_context_length(256)
    writer.add_embedding_length(hidden)
    writer.add_feed_forward_length(ffn)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(hidden // heads)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_merges([" ".join(pair) for pair in model["merges"]])
    special = {"<unk>", "<s>", "</s>", "<pad>"}
    writer.add_token_types([
        gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens
    ])  # fmt: skip
    writer.add_unk_token_id(tokens.index("<unk>"))
    writer.add_bos_token_id(tokens.index("<s>"))
    writer.add_eos_token_id(tokens.index("</s>"))
    writer.add_pad_token_id(tokens.index("<pad>"))
    generator = torch.Generator().manual_seed(0)
    head = hidden // heads
    shapes = {"token_embd.weight": (len(tokens), hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):
        shapes |= {
            f"blk.{i}.attn_norm.weight": (hidden,), f"blk.{i}.ffn_norm.weight": (hidden,),
            f"blk.{i}.attn_q.weight": (hidden, hidden),
            f"blk.{i}.attn_k.weight": (kv_heads * head, hidden),
            f"blk.{i}.attn_v.weight": (kv_heads * head, hidden),
            f"blk.{i}.attn_output.weight": (hidden, hidden),
            f"blk.{i}.ffn_gate.weight": (ffn, hidden), f"blk.{i}.ffn_up.weight": (ffn, hidden),
            f"blk.{i}.ffn_down.weight": (hidden, ffn),
        }  # fmt: skip
    for name, shape in shapes.items():
        weights = torch.randn(shape, generator=generator) * 0.5
        writer.add_tensor(name, (weights.abs() + 0.5 if len(shape) == 1 else weights).numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="session")
def tiny_chat_llama(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Llama with a chat template in its tokenizer."""
    path = tmp_path_factory.mktemp("tiny-chat-llama")
    shutil.copytree(tiny_llama, path, dirs_exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(path)
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(path)
    return path


def tiny_overrides(model_dir: Path, work: Path) -> list[str]:
    """Overrides for a seconds-long run of a tiny model with its store under ``work``."""
    return [
        f"model.name_or_path={model_dir}",
        "model.gguf_file=null",
        "dataset.train_rows=16",
        "dataset.eval_rows=8",
        "dataset.max_length=32",
        "trainer.num_train_epochs=2",
        "trainer.per_device_train_batch_size=4",
        "generation.max_new_tokens=8",
        "generation.eval_max_new_tokens=8",
        # Exact in fp32 only: on a GPU, precision=auto would train in bf16 autocast, whose
        # losses move in the 4th digit between two evaluations of the same adapter.
        "trainer.precision=fp32",
        f"tracking.uri=sqlite:///{work}/mlruns/mlflow.db",
        f"tracking.artifact_location={work}/mlruns/artifacts",
    ]


@functools.cache
def empty_store() -> Path:
    """An MLflow store with its schema made, once a session, under the tests' private cache:
    MLflow migrates a new SQLite store's schema in ~2 s, which every test's store would pay."""
    folder = Path(os.environ["PEFTLAB_CACHE"]).parent / "empty-store"
    folder.mkdir()
    SqlAlchemyStore(f"sqlite:///{folder}/mlflow.db", str(folder / "artifacts"))  # makes it
    return folder / "mlflow.db"


def new_store(work: Path) -> None:
    """The store under ``work`` (where :func:`tiny_overrides` points) as a copy of
    :func:`empty_store`, unless it has one. Tests of a store's own making go without."""
    store = work / "mlruns" / "mlflow.db"
    if not store.exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(empty_store(), store)


def compose_config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def in_process_overrides(work: Path, name: str = "run") -> list[str]:
    """Replace the ``${hydra:...}`` values that only a Hydra launch can resolve."""
    return [f"output_dir={work}/{name}"]


def peft_option(overrides) -> str:
    """The peft group's choice, as Hydra reports it to train.py's runs."""
    choices = [o.split("=", 1)[1] for o in overrides if o.startswith("peft=")]
    return choices[-1] if choices else "prompt-tuning"


def run_tiny(
    model_dir: Path, work: Path, *overrides: str, name: str = "run", shared: Shared | None = None
) -> RunResult:
    """One run in this process, as train.py would do it, into ``work/name``; on the base model
    and untuned measurements of ``shared`` (else of its own)."""
    new_store(work)
    cfg = compose_config(
        [*tiny_overrides(model_dir, work), *in_process_overrides(work, name), *overrides]
    )
    config_dir = work / name / ".hydra"  # as Hydra writes it: the config before resolution
    config_dir.mkdir(parents=True)
    OmegaConf.save(cfg, config_dir / "config.yaml")
    context = RunContext(
        run_dir=work / name,
        tags={"model": "tiny", "dataset": "prompts-sample", "peft": peft_option(overrides)},
        config_dir=config_dir,
    )
    return pipeline.run(to_settings(cfg), context, shared or Shared())


def logged_adapter_loss(work: Path, model_dir: Path, run_id: str, *overrides: str) -> float:
    """Held-out loss of the adapter a run logged, downloaded from its store onto a fresh base:
    a check of the logged eval_loss that does not go through the run's own numbers."""
    reload = work / f"reload-{run_id}"
    reload.mkdir()
    client = tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")
    adapter = client.download_artifacts(run_id, "adapter", str(reload))
    loaded = modeling.load(ModelConfig(name_or_path=str(model_dir)))
    model = PeftModel.from_pretrained(loaded.model, adapter).eval()
    return held_out_loss(model, loaded.tokenizer, model_dir, reload, *overrides)


def held_out_loss(model, tokenizer, model_dir: Path, work: Path, *overrides: str) -> float:
    """The held-out loss of ``model`` on a tiny run's held-out rows, as a run measures it."""
    cfg = to_settings(
        compose_config([*tiny_overrides(model_dir, work), f"output_dir={work}", *overrides])
    )
    splits = data.load_tokenized(cfg.dataset, tokenizer)
    args = training.training_arguments(cfg.trainer, work)
    return training.evaluate_loss(model, tokenizer, args, splits.eval)


def rows_csv(path: Path, bad_line: bool) -> Path:
    lines = ["text,id", *(f'"example number {i}, with a comma",{i}' for i in range(30))]
    if bad_line:
        lines.insert(5, "an unquoted, comma,99")  # three fields under a two-field header
    path.write_text("\n".join(lines) + "\n")
    return path


def real_tokens_per_epoch(model_dir: Path, *overrides: str) -> int:
    """A tiny run's training tokens an epoch, padding not counted (the attention mask's ones)."""
    tokenizer = PreTrainedTokenizerFast.from_pretrained(model_dir)
    cfg = to_settings(
        compose_config([*tiny_overrides(model_dir, model_dir), "output_dir=unused", *overrides])
    )
    return sum(map(sum, data.load_tokenized(cfg.dataset, tokenizer).train["attention_mask"]))


def peftlab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``peftlab ARGS`` in this process (``cli.main``), from ``cwd`` (its default store is
    ``cwd/mlruns``): its exit code and what it printed. Commands that launch train.py (rerun,
    resume) print that process's output straight through: use :func:`peftlab_process` there."""
    return as_a_process(lambda: cli.main(list(args)), args, cwd)


def as_a_process(main: Callable[[], int | None], args, cwd: Path) -> subprocess.CompletedProcess:
    """``main()`` run from ``cwd`` in this process, ended as a process would end: its exit code
    (a SystemExit's; for a message, printed and 1, as the interpreter does) and what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, redirect_stdout(out), redirect_stderr(err):
        patch.chdir(cwd)
        try:
            code = main()
        except SystemExit as exit:
            code = exit.code
            if isinstance(code, str):
                print(code, file=sys.stderr)
                code = 1
    return subprocess.CompletedProcess(args, code or 0, out.getvalue(), err.getvalue())


def peftlab_process(
    *args: str, cwd: Path, python: tuple[str, ...] = ()
) -> subprocess.CompletedProcess:
    """The ``peftlab`` command as a user runs it, in ``cwd`` (``python``: the interpreter's own
    options): each command's exit code is checked this way once, and rerun and resume always
    (they launch train.py)."""
    return subprocess.run(
        [sys.executable, *python, "-m", "peftlab.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def imported_top_level(stderr: str) -> set[str]:
    """Top-level packages imported by a process run with ``python -X importtime``."""
    lines = [line for line in stderr.splitlines() if line.startswith("import time:")]
    return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in lines}


@contextmanager
def serving(command: list[str], ready_url: str, env: dict[str, str] | None = None):
    """A server process, up once ``ready_url`` answers 200 (within 120 s), stopped after."""
    process = subprocess.Popen(
        command,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read()[-3000:]
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise TimeoutError(f"{ready_url} did not answer within 120 s")
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


# MLflow's server also starts a runner for its GenAI jobs (eight more processes, each importing
# mlflow) by default: nothing these tests look at, and seconds to start and stop every server.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def mlflow_server(work: Path):
    """``mlflow server`` on loopback over the store under ``work``; yields its base URL."""
    base = f"http://127.0.0.1:{free_port()}"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", f"sqlite:///{work}/mlruns/mlflow.db",
        "--host", "127.0.0.1", "--port", base.rsplit(":", 1)[1], "--workers", "1",
    ]  # fmt: skip
    with serving(command, f"{base}/health", env=MLFLOW_SERVER_ENV):
        yield base


# Debian's package (installed by `make test` where it can be) or any other build on PATH.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# Chromium as root in a container, with no network to try.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """A Chromium on PATH; without one this test is skipped, saying how, except in CI."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    message = "no chromium on PATH for the browser tests: sudo apt-get install chromium"
    if os.environ.get("PEFTLAB_REQUIRE_BROWSER") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests save what they saw: PEFTLAB_SCREENSHOTS, else a temp folder."""
    chosen = os.environ.get("PEFTLAB_SCREENSHOTS")
    if chosen:
        Path(chosen).mkdir(parents=True, exist_ok=True)
        return Path(chosen)
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory: pytest.TempPathFactory):
    """The tests' model conversions, Hugging Face files and matplotlib's font cache stay in
    their own temp folder, never in the user's ~/.cache (the variables reach the subprocesses
    too; matplotlib reads its own when first imported, after this)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PEFTLAB_CACHE", str(cache / "peftlab"))
        patch.setenv("HF_HOME", str(cache / "huggingface"))
        patch.setenv("MPLCONFIGDIR", str(cache / "matplotlib"))
        yield


def run_train(*overrides: str, cwd: Path, env: dict[str, str] | None = None):
    """``python train.py`` as a user runs it, its outputs under ``cwd``."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={cwd}/outputs/run"],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def train_in_process(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python train.py ARGS`` in this process: the script run as ``__main__`` (Hydra's own
    launch: compose, sweepers, launchers, callbacks), without a new interpreter's ~10 s of
    imports. Its exit code and what it printed; the log handlers Hydra set up go after."""

    def run_script() -> None:
        runpy.run_path(str(ROOT / "train.py"), run_name="__main__")

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [str(ROOT / "train.py"), *args])
        # Hydra sets up logging with dictConfig, which first closes every handler the process
        # has made: here pytest's and other libraries' (absl's would close pytest's capture).
        patch.setattr(logging.config, "_clearExistingHandlers", logging._handlers.clear)
        try:
            return as_a_process(run_script, args, cwd)
        finally:
            for handler in set(root.handlers) - set(handlers):
                handler.close()
            root.handlers[:], root.level = handlers, level


def store_runs(work: Path):
    """The MLflow client of the store under ``work`` and all its runs."""
    client = tracking.client(f"sqlite:///{work}/mlruns/mlflow.db")  # locked, as peftlab opens it
    experiments = [exp.experiment_id for exp in client.search_experiments()]
    return client, client.search_runs(experiments)


def sweep_parts(work: Path):
    """The sweep's parent run and its children, by job number."""
    client, runs = store_runs(work)
    (parent,) = [r for r in runs if r.data.tags.get("peftlab.sweep") == "true"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    return client, parent, sorted(children, key=lambda r: int(r.data.tags["job_num"]))


def run_sweep(model_dir: Path, work: Path, *overrides: str) -> subprocess.CompletedProcess:
    """``train.py -m`` on a tiny model in this process, its store and multirun/ under ``work``
    (test_train.py and test_faults.py run train.py, and a sweep, as processes of their own)."""
    new_store(work)
    return train_in_process("-m", *tiny_overrides(model_dir, work), *overrides, cwd=work)


@pytest.fixture(scope="session")
def sweep_run(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    """A 2x2 Cartesian sweep of a tiny BLOOM: virtual tokens x epochs."""
    work = tmp_path_factory.mktemp("sweep")
    result = run_sweep(
        tiny_bloom,
        work,
        "peft.prompt_tuning_init=RANDOM",
        "peft.num_virtual_tokens=2,4",
        "trainer.num_train_epochs=1,2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture(scope="session")
def method_sweep(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """One sweep over every PEFT method (the peft config group), each at its defaults, on the
    role-play task (act -> prompt): held-out generations scored."""
    from test_methods import METHODS

    work = tmp_path_factory.mktemp("method-sweep")
    task = ["dataset=prompts-task", "dataset.max_length=160"]  # the tiny tokenizer's long rows
    result = run_sweep(tiny_llama, work, f"peft={','.join(METHODS)}", *task)
    assert result.returncode == 0, result.stderr[-3000:]
    return work


@pytest.fixture(scope="session")
def runs_of_every_method(tiny_llama: Path, tmp_path_factory: pytest.TempPathFactory):
    """A run of every PEFT method on one tiny Llama, in one store."""
    from test_methods import METHODS

    work = tmp_path_factory.mktemp("methods")
    results = [
        run_tiny(tiny_llama, work, f"peft={option}", *overrides, name=option)
        for option, overrides in METHODS.items()
    ]
    return MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db"), results


@pytest.fixture(scope="session")
def postgres():
    """A throwaway PostgreSQL cluster on loopback for the session (see services.py)."""
    from services import postgres_cluster

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


# Two learning rates far apart: the low one barely moves the held-out loss, so once a trial of
# the high one has completed, the pruner stops the low one at its first evaluation.
LEARNING_RATES = "trainer.learning_rate=0.00001,0.05"
SEARCH = [
    "hparams_search=optuna",
    "hydra.sweeper.custom_search_space=null",  # the search space: the learning rates below only
    LEARNING_RATES,
    "hydra.sweeper.sampler=random",
    "trainer.eval_strategy=epoch",
    "trainer.num_train_epochs=3",
]


@pytest.fixture(scope="session")
def pruned_search(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials, 2 at a time in joblib's worker processes, with the percentile pruner."""
    work = tmp_path_factory.mktemp("pruned-search")
    result = run_sweep(
        tiny_bloom,
        work,
        *SEARCH,
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweeper.pruner=percentile",
        "+hydra.sweeper.pruner_settings.percentile=50",
        "+hydra.sweeper.pruner_settings.n_startup_trials=1",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return work


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

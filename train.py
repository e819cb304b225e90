"""Train one prompt-tuning run (or a sweep with -m) from the Hydra config tree in conf/."""

import hydra
from omegaconf import DictConfig

from peftlab.app import run_job
from peftlab.schema import register_configs

register_configs()


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_job(cfg)


if __name__ == "__main__":
    main()

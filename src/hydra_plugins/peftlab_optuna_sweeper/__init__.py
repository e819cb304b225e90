"""peftlab's Optuna sweeper, found by Hydra's plugin scan of the ``hydra_plugins`` package."""

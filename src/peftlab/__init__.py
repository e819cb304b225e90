"""peftlab: Hydra-configured, MLflow-tracked parameter-efficient fine-tuning."""

"""The names a run writes and the rest of peftlab reads: MLflow tags, metrics, artifacts and the
files of a run's and a sweep's folders. Each is spelled once, here; product and tests import it.

A leaf: it imports nothing, so any module may use it.
"""

# Tags of a sweep's parent run and its jobs.
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own: the UI nests a job under its sweep
SWEEP_TAG = "peftlab.sweep"  # on a sweep's parent run
SWEEP_DIR_TAG = "sweep_dir"
SWEPT_KEYS_TAG = "swept_keys"  # the keys a sweep varies, comma-separated
SWEEP_ID_TAG = "sweep_id"  # on a job: its parent run's id
JOB_NUM_TAG = "job_num"
FINISHED_JOBS_TAG = "finished_jobs"
FAILED_JOBS_TAG = "failed_jobs"
PRUNED_JOBS_TAG = "pruned_jobs"
BEST_RUN_ID_TAG = "best_run_id"
BEST_RUN_NAME_TAG = "best_run_name"
PRUNED_TAG = "pruned"  # on a trial's run: the step at which the pruner stopped its training
STUDY_TAG = "optuna_study"  # on a search's parent run: its study, and where it is stored
STORAGE_TAG = "optuna_storage"

# Tags of every run.
RUN_DIR_TAG = "run_dir"  # the run's folder: where `peftlab resume` finds its checkpoints
ERROR_TAG = "error"  # a FAILED run's one-line error
WORKER_DIED_TAG = "worker_died"  # on a search trial's run ended KILLED for its dead worker
RUN_COLOR_TAG = "mlflow.runColor"  # MLflow's: a run's colour in the UI's charts
DEVICE_TAG = "device"
GIT_COMMIT_TAG = "git_commit"
PYTHON_VERSION_TAG = "python_version"
# Opens an experiment in the UI's model-training view, not the GenAI one.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "finetuning"

# Metrics of a run.
EVAL_LOSS = "eval_loss"  # held-out loss, token-weighted; a curve during training, last: final
EVAL_PERPLEXITY = "eval_perplexity"
TRAIN_LOSS = "train_loss"
LEARNING_RATE = "learning_rate"
GRAD_NORM = "grad_norm"
TRAINABLE_PARAMS = "trainable_params"
ADAPTER_BYTES = "adapter_bytes"
TRAIN_RUNTIME = "train_runtime"
TRAIN_STEPS = "train_steps"
TRAIN_TOKENS_PER_SECOND = "train_tokens_per_second"
# What a run costs and breaks: the process's peak memory while training (resident on a CPU,
# allocated on a GPU), and the change of loss on general text (tuned minus untuned).
PEAK_MEMORY_BYTES = "peak_memory_bytes"
EVAL_FORGETTING = "eval_forgetting"
# A search's budget: on a trial's run what it trained (optimizer steps; real, non-pad tokens),
# on the search's parent run the sum over its trials.
SEARCH_STEPS = "search_steps"
SEARCH_TOKENS = "search_tokens"
DATASET_SKIPPED_LINES = "dataset_skipped_lines"
DATASET_DROPPED = "dataset_dropped"
# A generation metric is logged as eval_<name>, its untuned twin as eval_<name>_untuned.
SCORE_PREFIX = "eval_"
UNTUNED_SUFFIX = "_untuned"
EVAL_LOSS_UNTUNED = EVAL_LOSS + UNTUNED_SUFFIX
# Of a sweep's parent run.
BEST_EVAL_LOSS = "best_eval_loss"

# Artifacts of a run, and files of its folder.
ADAPTER_DIR = "adapter"
CONFIG_DIR = ".hydra"  # Hydra's: config.yaml, overrides.yaml
CONFIG_FILE = "config.yaml"
MODEL_ARTIFACT = "model"  # the logged MLflow model
SAMPLES_FILE = "samples.json"  # probe prompts: untuned and tuned continuations
GENERATIONS_TABLE = "generations.json"  # the held-out generations, an MLflow table
METRICS_FILE = "metrics.json"
REQUIREMENTS_FILE = "environment/requirements.txt"
TRAINER_DIR = "trainer"  # the Trainer's checkpoints
RUN_FILE = "mlflow_run.json"  # the MLflow run a job run again in its folder continues
SWEEP_FILE = "mlflow_sweep.json"  # in a sweep's folder: its parent run, swept and fixed keys

"""What the tests share, one module per kind; test modules import from here, never from one
another nor from conftest.

- ``configs``: the real config tree composed with small overrides (a tiny run's overrides).
- ``tiny_models``: random 2-layer models and their tokenizer, built on the fly (fixtures).
- ``matrices``: every PEFT method and every data format, the rows the tests run for each.
- ``datasets``: data files the tests write (chats, CSV rows).
- ``measures``: held-out losses and token counts measured as a run measures them.
- ``runners``: a tiny run, train.py and the ``peftlab`` command, in this process or as a process
  (``start_train``: a fixture, which stops what a test leaves running).
- ``stores``: MLflow stores (an empty one per test, copied) and the runs in them.
- ``session_runs``: runs and sweeps made once a session and shared by tests (fixtures).
- ``servers``: server processes (``mlflow server``), up once they answer.
- ``browser``: Chromium for the browser tests, and where they save screenshots (fixture).
- ``services``: a throwaway PostgreSQL cluster, the one-node Slurm, a team's MLflow server
  over PostgreSQL (fixtures).
- ``cluster``: the one-node Slurm cluster itself, also behind ``make cluster``.
"""

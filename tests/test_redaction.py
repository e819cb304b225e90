"""Passwords in URIs are masked in whatever peftlab writes."""

import io
import logging
from pathlib import Path

import pytest
from helpers.configs import compose_run
from helpers.runners import run_train
from hydra.core.utils import configure_log

from peftlab import names
from peftlab.redaction import RedactedStream, copy_redacted, redact


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql+psycopg://u:s3cret@db:5432/x", "postgresql+psycopg://u:***@db:5432/x"),
        ("mysql://root:pa@ss@h/db", "mysql://root:***@h/db"),  # an unescaped '@' in it
        ("a http://u:p@h b https://v:q@k/", "a http://u:***@h b https://v:***@k/"),
        ("uri: postgresql://u:p%40ss@h/db\n", "uri: postgresql://u:***@h/db\n"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),  # a port is no password
        # as Hydra logs an override: each ':' escaped
        (
            r"tracking.uri=postgresql\://u\:pw@h\:5432/x",
            r"tracking.uri=postgresql\://u\:***@h\:5432/x",
        ),
        ("sqlite:////tmp/mlflow.db", "sqlite:////tmp/mlflow.db"),
        ("journal:/shared/study.journal", "journal:/shared/study.journal"),
    ],
)
def test_a_uris_password_is_masked_and_nothing_else(text: str, expected: str):
    assert redact(text) == expected


def test_a_copied_config_folder_holds_no_password(tmp_path: Path):
    source = tmp_path / names.CONFIG_DIR
    source.mkdir()
    (source / names.CONFIG_FILE).write_text("tracking:\n  uri: postgresql://u:hunter2@h/db\n")
    (source / "overrides.yaml").write_text("- hydra.sweeper.storage=mysql://u:hunter2@h/db\n")
    copy = copy_redacted(source, tmp_path / "copy")
    texts = [path.read_text() for path in sorted(copy.iterdir())]
    assert texts == [
        "tracking:\n  uri: postgresql://u:***@h/db\n",
        "- hydra.sweeper.storage=mysql://u:***@h/db\n",
    ]


@pytest.mark.process
def test_hydras_own_lines_show_no_password(tmp_path: Path):
    """A mistyped key: Hydra writes its "To append to your config use +KEY=VALUE" line to
    stderr itself, the value as typed, before any job or logging filter runs."""
    result = run_train("tracking.urii=postgresql://user:secret@127.0.0.1/db", cwd=tmp_path)
    assert result.returncode != 0
    assert "To append to your config use +tracking.urii=postgresql://user:***@" in result.stderr
    assert "secret" not in result.stdout + result.stderr


def test_a_redacted_stream_masks_what_is_written_and_passes_the_rest():
    written = io.StringIO()
    stream = RedactedStream(written)
    stream.write("mysql://u:pw@h/db and plain text\n")
    assert written.getvalue() == "mysql://u:***@h/db and plain text\n"
    assert stream.getvalue() == written.getvalue()  # the stream's own attributes


@pytest.fixture
def hydras_console():
    """Hydra's own logging as a launch sets it up from conf/train.yaml (``hydra_logging``), its
    console handler writing into the text returned; put back as it was afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    _, hydra_cfg = compose_run(["tracking.uri=sqlite:///x.db"], Path("unused"))
    configure_log(hydra_cfg.hydra_logging)
    (console,) = root.handlers
    written = io.StringIO()
    console.setStream(written)
    yield written
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)


def test_hydras_own_log_lines_show_no_password(hydras_console: io.StringIO):
    """The line Hydra's launcher logs for each job of a sweep, its overrides as typed."""
    launcher = logging.getLogger("hydra._internal.core_plugins.basic_launcher")
    launcher.info("\t#%d : %s", 0, "tracking.uri=postgresql://user:secret@db:5432/runs peft=lora")
    printed = hydras_console.getvalue()
    assert printed.endswith("#0 : tracking.uri=postgresql://user:***@db:5432/runs peft=lora\n")
    assert printed.startswith("[") and "][HYDRA] \t#0" in printed  # Hydra's own format
    assert "secret" not in printed

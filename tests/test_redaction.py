"""Passwords in URIs are masked in whatever peftlab writes."""

import io
from pathlib import Path

import pytest
from helpers.runners import run_train

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

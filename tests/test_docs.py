"""The docs: the README's links lead somewhere, and the site (mkdocs.yml, docs/, its key-table
hook) builds strictly, as `make docs` builds it in CI."""

import re
import subprocess
import sys

import pytest
from helpers.configs import ROOT

# [text](target): the README's relative links, each a file of the repository (GitHub shows them).
LINK = re.compile(r"\]\((?!https?://)([^)#]+)(?:#[^)]*)?\)")


def test_the_readmes_links_are_files_of_the_repository():
    targets = LINK.findall((ROOT / "README.md").read_text())
    assert "docs/configuration.md" in targets
    missing = [target for target in targets if not (ROOT / target).is_file()]
    assert not missing, f"README.md links to files that are not there: {missing}"


@pytest.mark.process  # mkdocs, as `make docs` runs it
def test_the_site_builds_strictly(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    page = (tmp_path / "configuration" / "index.html").read_text()
    assert "<code>trainer.learning_rate</code>" in page  # a key table, made by the hook
    assert "<!-- keys:" not in page

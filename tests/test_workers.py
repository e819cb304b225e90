"""The suite's worker groups (helpers/workers.py), in a pytest session of two xdist workers:
each costly fixture made once in all, not once in each worker that runs one of its tests."""

import pytest
from helpers.configs import ROOT

SHARED = """
from pathlib import Path

import pytest

MADE = Path(__file__).parent / "made"


def made(name):
    with MADE.open("a") as file:
        file.write(name + "\\n")


@pytest.fixture(scope="session")
def daemon():
    made("daemon")


@pytest.fixture(scope="module", params=["a", "b", "c"])
def run(request):
    made(f"run-{request.param}")


@pytest.fixture(scope="module")
def model():
    made("model")


@pytest.mark.parametrize("n", range(8))
def test_of_the_daemon(daemon, n):
    pass


@pytest.mark.parametrize("n", range(8))
def test_of_a_run(run, n):
    pass


@pytest.mark.parametrize("n", range(8))
def test_of_the_model(model, n):
    pass


@pytest.mark.parametrize("n", range(8))
def test_of_nothing_shared(n):
    pass
"""

GROUPED = """
import pytest
from helpers import workers


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    workers.mark_groups(items, {"daemons": {"daemon"}})
"""


def test_each_shared_fixture_is_made_once_in_all_workers(pytester: pytest.Pytester, monkeypatch):
    pytester.makeconftest(GROUPED)
    pytester.makepyfile(test_shared=SHARED)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "tests"))
    result = pytester.runpytest_subprocess(
        "-n", "2", "--dist", "loadgroup", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(passed=48)
    made = (pytester.path / "made").read_text().split()
    assert sorted(made) == ["daemon", "model", "run-a", "run-b", "run-c"]

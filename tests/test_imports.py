"""What a process imports for good: loaded without collections, then frozen, once."""

import gc

import pytest

from peftlab import imports


@pytest.fixture
def nothing_frozen():
    """This process as a fresh one is: nothing frozen (conftest froze what each module starts
    with); frozen again after."""
    gc.unfreeze()
    yield
    gc.freeze()


def test_heavy_imports_load_without_collections_then_stay_frozen(nothing_frozen):
    with imports.heavy():
        assert not gc.isenabled()
        kept = [[] for _ in range(1000)]  # as an import's modules and classes
    assert gc.isenabled()
    assert all(gc.is_tracked(item) for item in kept)
    frozen = gc.get_freeze_count()
    assert frozen >= len(kept)
    with imports.heavy():  # a sweep's next job: its imports done, nothing more frozen
        assert gc.isenabled()
        [[] for _ in range(1000)]
    assert gc.get_freeze_count() == frozen


def test_heavy_imports_that_fail_leave_the_collector_on(nothing_frozen):
    with pytest.raises(ImportError), imports.heavy():
        import peftlab.no_such_module  # noqa: F401
    assert gc.isenabled()

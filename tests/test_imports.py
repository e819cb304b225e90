"""What a process imports for good: loaded without collections, then frozen, once. Each test
runs in a fresh process, as train.py's is: this one's collector is frozen and collected on the
test session's own terms (conftest), with other tests' threads alive in it."""

import subprocess
import sys
import textwrap


def in_a_fresh_process(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_heavy_imports_load_without_collections_then_stay_frozen():
    in_a_fresh_process("""
        import gc
        from peftlab import imports

        with imports.heavy():
            assert not gc.isenabled()
            kept = [[] for _ in range(1000)]  # as an import's modules and classes
        assert gc.isenabled()
        assert all(gc.is_tracked(item) for item in kept)
        frozen = gc.get_freeze_count()
        assert frozen >= len(kept), frozen
        with imports.heavy():  # a sweep's next job: its imports done, nothing more frozen
            assert gc.isenabled()
            [[] for _ in range(1000)]
        assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
    """)


def test_heavy_imports_that_fail_leave_the_collector_on():
    in_a_fresh_process("""
        import gc
        from peftlab import imports

        try:
            with imports.heavy():
                import peftlab.no_such_module  # noqa: F401
        except ImportError:
            pass
        else:
            raise AssertionError("the import did not fail")
        assert gc.isenabled()
    """)

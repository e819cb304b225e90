"""Which tests share an xdist worker (`--dist loadgroup`): those of a costly fixture, so that it
is made once, not once in each worker that runs one of its tests."""

from __future__ import annotations

import pytest


def mark_groups(items: list[pytest.Item], session_groups: dict[str, set[str]]) -> None:
    """Each test of a session fixture of ``session_groups`` (group: its fixtures) in that group;
    else each test of its module's own module-scoped fixtures in one group of the module (and of
    the fixture's parameter)."""
    for item in items:
        fixtures = fixtures_of(item)
        named = (group for group, shared in session_groups.items() if shared & fixtures)
        group = next(named, None) or module_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))


def fixtures_of(item: pytest.Item) -> set[str]:
    """The fixtures a test uses, those it asks for by a parameter's value included
    (``request.getfixturevalue``)."""
    named = {value for value in _params(item).values() if isinstance(value, str)}
    return set(item.fixturenames) | named


def module_fixture_group(item: pytest.Item) -> str | None:
    """The group of a test using its module's own module-scoped fixtures (a run, a loaded
    model), one for each parameter of such a fixture."""
    module = item.nodeid.split("::")[0]
    definitions = item._fixtureinfo.name2fixturedefs  # pytest's record of the test's fixtures
    shared = {
        name: definition
        for name in item.fixturenames
        for definition in definitions.get(name, ())
        if definition.scope == "module" and definition.baseid == module
    }
    if not shared:
        return None
    # A parameter by its index: xdist reads no group off a node id with a "]" after its "@".
    params = _params(item)
    return module + "".join(
        f"::{name}#{definition.params.index(params[name])}"
        for name, definition in shared.items()
        if name in params
    )


def _params(item: pytest.Item) -> dict:
    """A parametrized test's parameters by name; none for any other test."""
    return item.callspec.params if hasattr(item, "callspec") else {}

"""The layout's rules: no import cycle between ``syncd`` and ``converters``, a converter-free
configuration, and every implementation of an interface implementing all of it."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

from syncd.checkpoint.base import Checkpoint
from syncd.checkpoint.postgresql import PostgresCheckpoint
from syncd.checkpoint.sqlite import SqliteCheckpoint
from syncd.sources.base import Source
from syncd.sources.directory import DirectorySource
from syncd.sources.labelstudio import LabelStudioSource
from syncd.stores import backends
from syncd.stores.base import Store
from tests.conftest import REPO


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def test_converters_import_nothing_from_syncd():
    offenders = {path.name: sorted(m for m in imported_modules(path) if m.split(".")[0] == "syncd")
                 for path in sorted((REPO / "converters").glob("*.py"))}
    assert {name: mods for name, mods in offenders.items() if mods} == {}


def loaded_after(statement: str) -> set[str]:
    code = f"import sys; {statement}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_converters_loads_no_syncd_module():
    assert not {m for m in loaded_after("import converters, converters.inputs, converters.images")
                if m.split(".")[0] == "syncd"}


def test_the_configuration_loads_no_converter():
    loaded = loaded_after("import syncd.config; syncd.config.load(None)")
    assert not {m for m in loaded if m.split(".")[0] == "converters"}


def public_methods(protocol: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(member) for name, member in vars(protocol).items()
            if callable(member) and not name.startswith("_")}


def protocol_members(protocol: type) -> set[str]:
    """Methods, properties and annotated attributes the protocol declares."""
    names = {name for name, member in vars(protocol).items()
             if not name.startswith("_") and (callable(member) or isinstance(member, property))}
    return names | set(typing.get_type_hints(protocol))


def check_implements(cls: type, protocol: type) -> list[str]:
    """What ``cls`` lacks of ``protocol``: missing members, and methods whose parameters differ
    (an implementation may add optional parameters after the protocol's)."""
    problems = []
    for name in sorted(protocol_members(protocol)):
        if not hasattr(cls, name) and name not in typing.get_type_hints(cls) \
                and name not in inspect.signature(cls.__init__).parameters and name not in _set_in_init(cls):
            problems.append(f"{cls.__name__} has no {name}")
    for name, expected in public_methods(protocol).items():
        member = getattr(cls, name, None)
        if not callable(member):
            continue
        got = inspect.signature(member).parameters
        want = list(expected.parameters)
        extra = [p for p in list(got)[len(want):] if got[p].default is inspect.Parameter.empty]
        if list(got)[:len(want)] != want or extra:  # more parameters are fine when they are optional
            problems.append(f"{cls.__name__}.{name}{tuple(got)} is not {name}{tuple(want)}")
    return problems


def _set_in_init(cls: type) -> set[str]:
    """Attributes ``__init__`` assigns to ``self``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return set()
    return {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
            and isinstance(node.ctx, ast.Store)}


@pytest.mark.parametrize("scheme", sorted(backends()))
def test_every_registered_store_implements_the_interface(scheme):
    assert check_implements(backends()[scheme], Store) == []


def test_test_doubles_implement_the_store_interface():
    from tests.bundles.test_build import RecordingStore

    assert check_implements(RecordingStore, Store) == []


@pytest.mark.parametrize("cls", [LabelStudioSource, DirectorySource])
def test_every_source_implements_the_interface(cls):
    assert check_implements(cls, Source) == []


@pytest.mark.parametrize("cls", [SqliteCheckpoint, PostgresCheckpoint])
def test_every_checkpoint_implements_the_interface(cls):
    assert check_implements(cls, Checkpoint) == []


def test_the_check_finds_a_missing_method():
    class Incomplete:
        url = "x://"
        stop = None

        def put(self, key, data): ...

    problems = check_implements(Incomplete, Store)
    assert "Incomplete has no delete" in problems
    assert any(p.startswith("Incomplete.put(") for p in problems)

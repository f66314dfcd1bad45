"""Fixtures shared by every test folder: a fresh instance, and the real server running it."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Instance, Server


@pytest.fixture(scope="session")
def instance_template(tmp_path_factory: pytest.TempPathFactory) -> Instance:
    """One `mailhost init` per test process (a certificate and an Argon2id hash cost time);
    each test gets its own copy."""
    return Instance.create(tmp_path_factory.mktemp("template") / "instance")


@pytest.fixture
def instance(instance_template: Instance, tmp_path: Path) -> Instance:
    folder = tmp_path / "instance"
    shutil.copytree(instance_template.folder, folder)
    return Instance(folder, instance_template.password)


@pytest.fixture
def server(instance: Instance) -> Iterator[Server]:
    with instance.start() as running:
        yield running

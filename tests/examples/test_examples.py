"""Every program in ``examples/`` runs to completion against a coord-server, as its docstring says to run it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from coord.testing import ServerProcess, start_coord_server

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = start_coord_server(tmp_path_factory.mktemp("examples") / "coord")
    try:
        yield process
    finally:
        process.stop()


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 10, EXAMPLES


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_runs(server: ServerProcess, example: Path) -> None:
    env = {**os.environ, "COORD_ENDPOINTS": server.endpoint, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, str(example)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90, check=False
    )
    output = f"{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    assert done.returncode == 0, f"{example.name} exited {done.returncode}\n{output}"
    assert done.stdout.strip(), f"{example.name} printed nothing"

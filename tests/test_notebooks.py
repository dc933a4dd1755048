"""The notebooks: committed without outputs, and each one runs top to bottom on small data.

They run in a kernel of this interpreter (ipykernel's ``python3`` kernelspec, which ships in
the venv), in a temporary directory, with ``CUSTOS_HOME`` and the model registry
(``CUSTOS_MODELS_DIR``, a copy of ``models/``) in temporary folders: a notebook never
publishes into the repository's ``models/`` here. One small dataset (300 identities, 12 h) is
shared by the three, in order; 02 publishes its candidate even when it is not better
(``CUSTOS_NOTEBOOK_FORCE_PUBLISH=1``) so the publish-and-verify path runs every time.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest

from pipeline.config import REPO_ROOT

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
NOTEBOOKS = ("01_explore.ipynb", "02_retrain.ipynb", "03_evaluate.ipynb")


def _strip_module() -> Any:
    path = NOTEBOOK_DIR / "strip_outputs.py"
    spec = importlib.util.spec_from_file_location("strip_outputs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


strip = _strip_module().strip


def test_every_notebook_is_listed_here() -> None:
    assert sorted(p.name for p in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(NOTEBOOKS)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    nbformat.validate(nb)
    assert not strip(nb), f"{name} has outputs: run `python notebooks/strip_outputs.py`"
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.fixture(scope="module")
def run_env(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A working directory and the kernel's environment (no CUSTOS_* from the caller)."""
    root = tmp_path_factory.mktemp("notebooks")
    # A kernelspec of this very interpreter: a user-level "python3" kernelspec (which Jupyter
    # prefers to the venv's) could point at another Python without Custos installed.
    spec = root / "kernels" / "custos-test"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Custos tests", "language": "python",
    }))  # fmt: skip
    models = root / "models"
    shutil.copytree(REPO_ROOT / "models", models)  # the committed model and the dev key
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUSTOS_")}
    env.update(
        CUSTOS_HOME=str(root / "home"),
        CUSTOS_MODELS_DIR=str(models),
        CUSTOS_NB_DATA=str(root / "data"),
        CUSTOS_NB_IDENTITIES="300",
        CUSTOS_NB_DURATION="12h",
        CUSTOS_NB_KAFKA="0",  # the Kafka path is covered by tests/integration/test_export.py
        CUSTOS_NB_TREES="25",
        CUSTOS_NB_SCALES="1,10",
        CUSTOS_NOTEBOOK_FORCE_PUBLISH="1",
        MPLBACKEND="agg",
    )
    return root, env


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, run_env: tuple[Path, dict[str, str]]) -> None:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient

    root, env = run_env
    nb = nbformat.read(NOTEBOOK_DIR / name, as_version=4)
    specs = KernelSpecManager(kernel_dirs=[str(root / "kernels")])
    km = KernelManager(kernel_name="custos-test", kernel_spec_manager=specs)
    client = NotebookClient(nb, km=km, timeout=600, resources={"metadata": {"path": str(root)}})
    t0 = time.perf_counter()
    try:
        client.execute(env=env)  # raises CellExecutionError with the cell's traceback
    finally:
        if km.has_kernel:  # nbclient leaves a kernel it did not create running
            km.shutdown_kernel(now=True)
    print(f"{name}: {time.perf_counter() - t0:.1f} s")
    text = "\n".join(
        o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
    )
    if name == "02_retrain.ipynb":
        # Published into the temporary registry, verified as a worker verifies it.
        assert "verified like a worker" in text
        assert (root / "models" / "detector" / "2" / "manifest.json").exists()
        # ... and nothing in the repository's own registry changed.
        changed = subprocess.run(["git", "status", "--porcelain", "--", "models"], cwd=REPO_ROOT,
                                 capture_output=True, text=True, check=True).stdout  # fmt: skip
        assert changed == "", changed

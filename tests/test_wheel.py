"""The package as a user installs it: ``python -m build`` and the wheel in a fresh environment.

The ``slow`` tests build the sdist and, from it, the wheel (``python -m build``, which
compiles the C extension once), create a virtual environment without the system
site-packages (where the editable install of this checkout lives), install the wheel with
its ``cli`` extra from the package index and run the command and the quickstart there,
with the working directory outside the source tree.  One build and one environment
serve the whole module.  ``python -m pytest -m "not slow"`` leaves them out.

Building the sdist writes ``src/crossentropy.egg-info`` into the checkout, as
``pip install -e .`` does; the wheel is built from the unpacked sdist, in a temporary
directory.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# What no install here may pull in: the library and its `cli` extra need none of them.
FORBIDDEN = ("torch", "jax", "jaxlib")

# Variables that would let the checkout or the calling environment into the new one.
_LEAKY = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "VIRTUAL_ENV",
    "CROSSENTROPY_DISABLE_KERNELS",
)


def _version() -> str:
    """The version written in ``src/crossentropy/_version.py``, read without importing it."""
    tree = ast.parse((ROOT / "src" / "crossentropy" / "_version.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "__version__":
            return node.value.value
    raise AssertionError("src/crossentropy/_version.py assigns no __version__")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _LEAKY}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", PYTHONNOUSERSITE="1")
    return env


def _run(cmd: Sequence[object], *, cwd: Path, timeout: float, env: dict | None = None) -> str:
    """Run ``cmd``; its stdout, or an AssertionError that shows the command's output."""
    cmd = [str(c) for c in cmd]
    p = subprocess.run(
        cmd, cwd=cwd, env=env or _env(), capture_output=True, text=True, timeout=timeout
    )
    if p.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {p.returncode}\n"
            f"--- stdout ---\n{p.stdout[-4000:]}\n--- stderr ---\n{p.stderr[-4000:]}"
        )
    return p.stdout


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@dataclass(frozen=True)
class Venv:
    root: Path
    python: Path
    command: Path  # the `crossentropy` console script
    work: Path  # a working directory outside the source tree

    def run(self, *args: object, timeout: float = 300) -> str:
        return _run(args, cwd=self.work, timeout=timeout)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    out = tmp_path_factory.mktemp("dist")
    _run([sys.executable, "-m", "build", "--outdir", out, ROOT], cwd=ROOT, timeout=1800)
    (sdist,) = out.glob("crossentropy-*.tar.gz")
    (wheel,) = out.glob("crossentropy-*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def venv(dist: Dist, tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("venv")
    work = tmp_path_factory.mktemp("work")
    assert ROOT not in work.parents, f"the working directory {work} is inside the checkout"
    _run([sys.executable, "-m", "venv", root], cwd=work, timeout=300)
    bindir = root / ("Scripts" if os.name == "nt" else "bin")
    python = bindir / ("python.exe" if os.name == "nt" else "python")
    forbid = work / "forbid.txt"
    forbid.write_text("".join(f"{name}<0\n" for name in FORBIDDEN))  # no version satisfies <0
    _run(
        [python, "-m", "pip", "install", "--constraint", forbid, f"{dist.wheel}[cli]"],
        cwd=work,
        timeout=1800,
    )
    return Venv(root, python, bindir / "crossentropy", work)


def _members(dist: Dist) -> tuple[list[str], list[str]]:
    with tarfile.open(dist.sdist) as t:
        sdist = [name.split("/", 1)[1] for name in t.getnames() if "/" in name]
    with zipfile.ZipFile(dist.wheel) as z:
        wheel = z.namelist()
    return sdist, wheel


@pytest.mark.slow
def test_sdist_holds_the_sources_tests_and_docs(dist):
    names, _ = _members(dist)
    for required in (
        "src/crossentropy/kernels/_ce.c",
        "src/crossentropy/kernels/_ce_xla.cc",
        "src/crossentropy/kernels/_ce_xla_kernel.c",
        "src/crossentropy/_version.py",
        "src/crossentropy/py.typed",
        "setup.py",
        "pyproject.toml",
        "LICENSE",
        "README.md",
        "CHANGELOG.md",
        "tests/__init__.py",
        "tests/conftest.py",
        "tests/support.py",
        "tests/test_wheel.py",
        "examples/quickstart.py",
        "docs/demo-curves.png",
        "mkdocs.yml",
    ):
        assert required in names, f"{required} is missing from {dist.sdist.name}"
    built = [n for n in names if n.endswith((".so", ".pyd", ".pyc")) or "__pycache__" in n]
    assert built == [], f"build products in {dist.sdist.name}"
    assert dist.sdist.name == f"crossentropy-{_version()}.tar.gz"


@pytest.mark.slow
def test_wheel_holds_the_compiled_kernels_and_no_tests(dist):
    _, names = _members(dist)
    assert [n for n in names if re.fullmatch(r"crossentropy/kernels/_ce\..+\.(so|pyd)", n)]
    assert "crossentropy/py.typed" in names
    assert "crossentropy/cli/__init__.py" in names
    info = f"crossentropy-{_version()}.dist-info"
    assert f"{info}/licenses/LICENSE" in names
    assert [n for n in names if not n.startswith(("crossentropy/", info + "/"))] == []
    assert [n for n in names if n.endswith(".c") or "/tests/" in n] == []
    with zipfile.ZipFile(dist.wheel) as z:
        metadata = z.read(f"{info}/METADATA").decode()
        scripts = z.read(f"{info}/entry_points.txt").decode()
    assert f"\nVersion: {_version()}\n" in metadata
    assert "\nLicense-Expression: BSD-3-Clause\n" in metadata
    requires = re.findall(r"^Requires-Dist: (.+)$", metadata, re.M)
    for name in FORBIDDEN[:2]:  # present, but only behind their extras
        assert [r for r in requires if r.startswith(name)], name
        assert all("extra ==" in r for r in requires if r.startswith(name)), requires
    assert re.search(r"^crossentropy = crossentropy\.cli:main$", scripts, re.M)


_PROBE = """\
import importlib.metadata, importlib.util, json, sys
import crossentropy, crossentropy.kernels
print(json.dumps({
    "file": crossentropy.__file__,
    "version": crossentropy.__version__,
    "metadata": importlib.metadata.version("crossentropy"),
    "kernels": crossentropy.kernels.available(),
    "absent": [m for m in %r if importlib.util.find_spec(m) is None],
    "prefix": sys.prefix,
}))
"""


@pytest.mark.slow
def test_installed_wheel_is_self_contained(venv):
    got = json.loads(venv.run(venv.python, "-c", _PROBE % (FORBIDDEN,)))
    assert Path(got["prefix"]).resolve() == venv.root.resolve()
    assert venv.root.resolve() in Path(got["file"]).resolve().parents, got["file"]
    assert got["kernels"] is True
    assert got["absent"] == list(FORBIDDEN)
    # one version everywhere: the source file, the module, the metadata and the command
    assert got["version"] == got["metadata"] == _version()
    assert venv.run(venv.command, "--version").strip() == f"crossentropy {_version()}"


@pytest.mark.slow
def test_demo_runs_from_the_installed_wheel(venv):
    out_dir = venv.work / "demo"
    out = venv.run(venv.command, "demo", "--epochs", 2, "--quiet", "--out", out_dir)
    assert out.startswith("Handwritten digits: 1347 training and 450 test images"), out
    assert "; 2 epochs," in out
    with (out_dir / "history.csv").open() as f:
        rows = list(csv.DictReader(f))
    runs = {(r["model"], r["loss"]) for r in rows}
    epochs = {r["epoch"] for r in rows}
    assert len(runs) == 8 and epochs == {"0", "1", "2"} and len(rows) == 8 * 3
    labels = np.load(out_dir / "test_labels.npy")
    for r in rows:
        if r["epoch"] != "2":
            continue
        # the saved test logits give the accuracy recorded and printed for the run
        logits = np.load(out_dir / f"test_logits_{r['model']}_{r['loss']}.npy")
        accuracy = np.mean(np.argmax(logits, axis=1) == labels)
        assert float(r["test_accuracy"]) == pytest.approx(accuracy, abs=1e-12)
        assert f"{100 * accuracy:.1f}%" in out
        if r["loss"] == "cross-entropy":
            assert accuracy > 0.8, r
    assert (out_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_quickstart_runs_from_the_installed_wheel(venv):
    script = venv.work / "quickstart.py"
    script.write_text((ROOT / "examples" / "quickstart.py").read_text())
    out = venv.run(venv.python, script)
    # the same output as this checkout's library in this interpreter ...
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    assert out == _run([sys.executable, script], cwd=venv.work, timeout=300, env=env)
    # ... and numbers a reader can check by hand
    lines = out.splitlines()
    assert lines[0].endswith(f"= {-math.log(0.8):.4f}")
    for line, p in zip(lines[1:4], ([0.25] * 4, [0.1, 0.1, 0.1, 0.7], [0.001] * 3 + [0.999])):
        p = np.array(p)
        assert line.endswith(f"= {-np.sum(p * np.log2(p)):.4f} bits")
    assert lines[-1].startswith("step 200") and float(lines[-1].split()[-1]) > 0.95


def test_changelog_has_a_section_for_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    headings = re.findall(r"^## \[(.+?)\](?: - (\d{4}-\d{2}-\d{2}))?$", changelog, re.M)
    assert headings[0] == ("Unreleased", "")
    assert (_version(), "") not in headings
    assert _version() in [v for v, date in headings[1:] if date]


def test_the_package_exports_the_single_version():
    import crossentropy
    from crossentropy import _version as module

    assert crossentropy.__version__ is module.__version__
    assert module.__version__ == _version()

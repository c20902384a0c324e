"""The documentation site builds strictly, its tutorials executed.

``mkdocs build --strict`` fails on any warning: a broken link, a docstring the API
reference cannot parse, or a tutorial code block that raises (markdown-exec runs
every ``exec="on"`` block while building, so every number on those pages comes
from the code as it is).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.skipif(not (ROOT / "mkdocs.yml").exists(), reason="not a source checkout")
def test_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    tutorial = (tmp_path / "site" / "tutorials" / "softmax-stability" / "index.html").read_text()
    assert "23.026" in tutorial  # the clipped loss, computed while building
    reference = (tmp_path / "site" / "reference" / "functions" / "index.html").read_text()
    assert "linear_cross_entropy" in reference and "Traceback" not in tutorial

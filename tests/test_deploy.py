"""The deployment companions stay true to the code: deploy/check_examples.py validates the example agent
config, Prometheus config and alert rules (promtool), the Grafana dashboard's metric names, the Kubernetes
manifests' command lines and the health probe against a real tail."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_deploy_examples_validate():
    result = subprocess.run([sys.executable, "deploy/check_examples.py"], cwd=REPO, capture_output=True, text=True,
                            timeout=240)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "deploy checks passed" in result.stdout

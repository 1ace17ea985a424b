"""scripts/find-python.sh: finds a working interpreter, or says exactly what to install."""

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "find-python.sh"


def test_finds_the_running_python() -> None:
    want = f"{sys.version_info.major}.{sys.version_info.minor}"
    out = subprocess.run([str(SCRIPT), want], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    found = out.stdout.strip()
    version = subprocess.run(
        [found, "-c", "import sys; print(sys.version_info[:2])"], capture_output=True, text=True, timeout=60
    ).stdout
    assert version.strip() == str(sys.version_info[:2])


def test_missing_python_explains_how_to_install_it() -> None:
    out = subprocess.run([str(SCRIPT), "2.5"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stdout == ""
    assert "no working python2.5 found" in out.stderr
    assert "apt-get install python2.5" in out.stderr and "pyenv install 2.5" in out.stderr

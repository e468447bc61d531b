"""The hand-written stubs match the native module (mypy.stubtest), and the pure-Python
package type-checks against them."""
import subprocess
import sys
from pathlib import Path

PYSRC = Path(__file__).resolve().parent.parent / "pysrc"


def test_stubtest_native_module():
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "rbd_core._native",
         "--allowlist", str(PYSRC.parent / ".mypy-stubtest-allowlist")],
        capture_output=True, text=True, cwd=PYSRC.parent,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_package_type_checks():
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "-p", "rbd_core"],
        capture_output=True, text=True, cwd=PYSRC,
    )
    assert out.returncode == 0, out.stdout + out.stderr

"""rbd_core.compat behaves like Debian's python3-rados/python3-rbd on the same calls.

parity_scenarios.py runs ~250 scenarios (successes and failures) with each module pair in a
subprocess: the real bindings with /usr/bin/python3 (isolated: no PYTHONPATH, no venv) and the
shim with this interpreter. Their outputs must be identical.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ceph_conf

pytestmark = pytest.mark.live
SCRIPT = Path(__file__).with_name("parity_scenarios.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def run(python: str, mode: str) -> list:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["CEPH_CONF"] = ceph_conf()
    # -I: isolated mode (no PYTHONPATH, user site or script directory on sys.path).
    out = subprocess.run([python, "-I", str(SCRIPT), mode], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, f"{mode} run failed:\n{out.stderr[-4000:]}"
    return json.loads(out.stdout)


def test_system_python_has_the_real_bindings():
    out = subprocess.run([SYSTEM_PYTHON, "-I", "-c", "import rados, rbd; print(rbd.__file__)"],
                         capture_output=True, text=True, env={"PATH": os.environ.get("PATH", "")})
    assert out.returncode == 0 and "dist-packages" in out.stdout, out.stderr


def test_shim_matches_python_rbd():
    real = run(SYSTEM_PYTHON, "real")
    shim = run(sys.executable, "compat")
    assert len(real) >= 200
    assert [name for name, _ in shim] == [name for name, _ in real]
    diffs = [(name, r, s) for (name, r), (_, s) in zip(real, shim) if r != s]
    assert not diffs, "\n".join(f"{n}:\n  python-rbd {r}\n  compat     {s}" for n, r, s in diffs)
    # Failures are part of the contract: many scenarios end in an exception, the same one.
    assert sum(1 for _, r in real if "raises" in r) >= 70
    print(f"\n{len(real)} parity scenarios, {sum(1 for _, r in real if 'raises' in r)} of them raising")

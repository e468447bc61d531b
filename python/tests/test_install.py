"""Installability: the wheel built by ``maturin build`` installs into a fresh virtualenv
without network (``pip install --no-index``) and the recipes run from it against the dev
cluster (a Glance upload, a Nova boot from it, data checked, everything removed); and ``pip
install ./python`` from the source tree works in a fresh virtualenv (pip fetches maturin from
PyPI for the isolated build; the Rust build reuses the workspace's target directory).

The wheel is built with the debug profile (the release profile takes ~40 s more from a cold
cache and is not what is being tested); ``--auditwheel skip`` because the extension links the
system's librbd/librados (Debian packages), which a manylinux repair would try to vendor.
"""
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ceph_conf, unique

pytestmark = pytest.mark.live
PYTHON_DIR = Path(__file__).resolve().parent.parent
MATURIN = Path(sys.executable).with_name("maturin")

SCRIPT = r"""
import hashlib, os, sys
import rbd_core
from rbd_core import glance, nova
assert rbd_core.__file__.startswith(sys.prefix), rbd_core.__file__
c = rbd_core.Cluster(conffile=os.environ["CEPH_CONF"], client_id=os.environ.get("RBD_TEST_CLIENT_ID", "admin"))
images, vms = c.open_pool("images"), c.open_pool("vms")
image_id, instance = sys.argv[1], sys.argv[2]
data = os.urandom(8 << 20)
up = glance.upload(images, image_id, data)
try:
    disk = nova.boot_disk(up.location, vms, instance, size=16 << 20)
    try:
        assert disk.parent == f"images/{image_id}@snap", disk
        with vms.open(disk.name, read_only=True) as img:
            got = img.read(0, len(data))
            assert img.size() == 16 << 20 and img.read(len(data), 4096) == bytes(4096)
        assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()
    finally:
        nova.delete_instance_disks(vms, instance)
finally:
    glance.delete(images, up.location)
print("ok", up.location, disk.name)
"""


def run(cmd, **kw):
    out = subprocess.run(cmd, capture_output=True, text=True, **kw)
    assert out.returncode == 0, f"{cmd} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out


def fresh_venv(path: Path) -> Path:
    run([sys.executable, "-m", "venv", str(path)])
    py = path / "bin" / "python"
    assert py.exists()
    return py


def check_recipes(py: Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["CEPH_CONF"] = ceph_conf()
    tag = unique("inst")
    instance = str(__import__("uuid").uuid4())
    # -I: isolated (no PYTHONPATH, no script directory): only the venv's rbd_core can be found.
    out = run([str(py), "-I", "-c", SCRIPT, tag, instance], env=env, cwd=cwd, timeout=300)
    return out.stdout


def test_wheel_installs_offline_into_a_fresh_venv_and_runs_recipes(tmp_path):
    t = time.monotonic()
    run([str(MATURIN), "build", "--auditwheel", "skip", "-o", str(tmp_path / "dist")], cwd=PYTHON_DIR, timeout=900)
    built = time.monotonic() - t
    wheels = list((tmp_path / "dist").glob("rbd_core-*-abi3-*.whl"))
    assert len(wheels) == 1, wheels
    py = fresh_venv(tmp_path / "venv")
    run([str(py), "-m", "pip", "install", "--no-index", "--disable-pip-version-check", str(wheels[0])], timeout=300)
    out = check_recipes(py, tmp_path)
    assert out.startswith("ok rbd://"), out
    print(f"\nwheel built in {built:.1f}s ({wheels[0].name}, {wheels[0].stat().st_size >> 20} MiB)")


def test_pip_install_from_the_source_tree(tmp_path):
    py = fresh_venv(tmp_path / "venv")
    t = time.monotonic()
    run([str(py), "-m", "pip", "install", "--disable-pip-version-check", str(PYTHON_DIR)], timeout=900)
    print(f"\npip install ./python took {time.monotonic() - t:.1f}s")
    out = check_recipes(py, tmp_path)
    assert out.startswith("ok rbd://"), out
    # py.typed and the stubs are installed with the package.
    site = run([str(py), "-I", "-c", "import rbd_core, os; print(os.path.dirname(rbd_core.__file__))"]).stdout.strip()
    assert {"py.typed", "_native.pyi"} <= set(os.listdir(site))

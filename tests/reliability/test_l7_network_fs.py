"""L7: ``file://`` on a network or FUSE filesystem is refused at connect unless allowed.

RELIABILITY.md 3.3 L7. flock on NFS is emulated or local-only, and FUSE filesystems (sshfs,
s3fs, ...) may not implement it at all, so ``unidist.connect("file://...")`` looks the data
directory up in the kernel's mount table (``/proc/self/mountinfo``) and refuses NFS, SMB/CIFS,
FUSE, 9p, Ceph, GlusterFS, Lustre, AFS, GPFS, BeeGFS unless the URL says
``?allow_network_fs=true``.

No mocks: the refusal runs against a real FUSE mount, made by a helper process in a private
user and mount namespace (``unshare -Urm``; it needs ``/dev/fuse`` and unprivileged user
namespaces, as on stock Linux) and served by a minimal in-process filesystem that answers
only INIT and GETATTR. With the opt-in the check is passed and the backend goes on to use
the directory, which this toy filesystem then refuses (ENOSYS). Limit: there is no NFS or
SMB server here, so those names are covered only by the fs-type table, not by a mount.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import unidist
from tests.reliability._report import Result, seed
from unidist.backends.file.backend import _fs_type

HERE = Path(__file__).resolve().parent
REFUSAL = "where file locks are not reliable"


def test_l7_fuse_mount_is_refused_unless_allowed(tmp_path: Path) -> None:
    res = Result("L7", "file", seed(), {"mount": "fuse"}, path=str(tmp_path))
    mnt = tmp_path / "mnt"
    proc = subprocess.run(
        ["unshare", "-Urm", sys.executable, str(HERE / "_lock_fuse.py"), str(mnt)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"FUSE helper failed: {proc.stdout}\n{proc.stderr}"
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    res.attempted = 2
    res.extra.update(mount_table_fstype=out["fstype"])
    refused = REFUSAL in out["default"] and "fuse" in out["default"]
    opted_in = REFUSAL not in out["allowed"]
    res.ok = int(refused) + int(opted_in)
    res.violations = res.attempted - res.ok
    res.emit()
    assert out["fstype"] == "fuse"
    assert refused, f"not refused: {out['default']}"
    assert "allow_network_fs=true" in out["default"], "the refusal must name the opt-in"
    assert opted_in, f"allow_network_fs=true still refused: {out['allowed']}"


def test_l7_local_filesystems_of_this_host_are_accepted(tmp_path: Path) -> None:
    """Every local mount type in the real mount table is classified local, and a data
    directory on the local filesystems at hand (the test's tmp dir, /dev/shm) connects."""
    network = ("nfs", "cifs", "smb", "fuse", "9p", "ceph", "glusterfs", "lustre")
    checked = 0
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            mount_point, fstype = fields[4], fields[fields.index("-") + 1]
            if fstype.startswith(network) or fstype in {"afs", "gpfs", "beegfs", "sshfs"}:
                assert _fs_type(Path(mount_point)) == fstype, mount_point
            elif Path(mount_point).is_dir():
                assert _fs_type(Path(mount_point)) is None, f"{mount_point} ({fstype})"
            checked += 1
    assert checked > 0
    for where in (tmp_path / "data", Path("/dev/shm") / f"unidist-l7-{tmp_path.name}"):
        try:
            unidist.connect(f"file://{where}").ping()
        finally:
            unidist.backends.reset()
            if where.is_relative_to("/dev/shm"):
                subprocess.run(["rm", "-rf", str(where)], check=True)

"""L7 helper: mount a real (minimal) FUSE filesystem and try to open a file:// backend on it.

Run as ``unshare -Urm python _lock_fuse.py MOUNTPOINT``: a private user and mount namespace
lets an unprivileged process mount FUSE (Linux 4.18+) without touching the host's mounts,
and the mount vanishes with the process. The filesystem is served by a thread here: it
answers INIT and GETATTR (an empty root directory owned by us, mode 0700) and refuses every
other request with ENOSYS. Prints one JSON line: the fs type the kernel's mount table shows
for the mount point, and what ``unidist.connect`` said with and without
``allow_network_fs=true``.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import struct
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import unidist  # noqa: E402

_INIT, _GETATTR = 26, 3
_MS_NOSUID, _MS_NODEV = 2, 4


def _serve(fd: int) -> None:
    while True:
        try:
            buf = os.read(fd, (1 << 20) + 4096)
        except OSError:
            return  # unmounted
        _len, opcode, unique, _node = struct.unpack_from("<IIQQ", buf)
        err, payload = -errno.ENOSYS, b""
        if opcode == _INIT:  # protocol 7.26; fuse_init_out is 64 bytes from 7.23 on
            err = 0
            payload = struct.pack("<IIIIHHIIHHI7I", 7, 26, 0, 0, 0, 0, 4096, 1, 0, 0, 0,
                                  *[0] * 7)  # fmt: skip
        elif opcode == _GETATTR:  # fuse_attr_out: valid, valid_nsec, dummy, fuse_attr
            err = 0
            attr = struct.pack("<QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40700, 2,
                               os.getuid(), os.getgid(), 0, 4096, 0)  # fmt: skip
            payload = struct.pack("<QII", 1, 0, 0) + attr
        os.write(fd, struct.pack("<IiQ", 16 + len(payload), err, unique) + payload)


def _connect(url: str) -> str:
    try:
        unidist.connect(url)
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        unidist.backends.reset()
    return "connected"


def main(mountpoint: str) -> int:
    os.makedirs(mountpoint, mode=0o700, exist_ok=True)
    fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}"
    opts += ",default_permissions"
    flags = ctypes.c_ulong(_MS_NOSUID | _MS_NODEV)
    rc = libc.mount(b"unidist-l7", mountpoint.encode(), b"fuse", flags, opts.encode())
    if rc != 0:
        print(json.dumps({"mount_error": os.strerror(ctypes.get_errno())}), flush=True)
        return 1
    threading.Thread(target=_serve, args=(fd,), daemon=True).start()
    fstype = "?"
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            if fields[4] == mountpoint:
                fstype = fields[fields.index("-") + 1]
    out = {
        "fstype": fstype,
        "default": _connect(f"file://{mountpoint}"),
        "allowed": _connect(f"file://{mountpoint}?allow_network_fs=true"),
    }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""Child-process entry points for the log tests (run as ``python _procs.py KIND ...``)."""

from __future__ import annotations

import json
import sys
import time


def write(args: list[str]) -> None:
    """write DIR TRACK COUNT TAG ROTATE KEEP [HOST]: COUNT records numbered 0..COUNT-1."""
    log_dir, track, count, tag, rotate, keep = args[:6]
    import unidist.log

    unidist.log.setup(
        dir=log_dir,
        rotate=rotate,
        keep=int(keep),
        console="off",
        stdlib=False,
        host=args[6] if len(args) > 6 else None,
    )
    log = unidist.log.get_logger(track)
    pad = "x" * 60
    for n in range(int(count)):
        log.info("rec", tag=tag, n=n, pad=pad)


def write_slowly(args: list[str]) -> None:
    """write_slowly DIR TRACK SECONDS TAG ROTATE: one record every ~2 ms for SECONDS."""
    log_dir, track, seconds, tag, rotate = args[:5]
    import unidist.log

    unidist.log.setup(dir=log_dir, rotate=rotate, keep=1000, console="off", stdlib=False)
    log = unidist.log.get_logger(track)
    end = time.monotonic() + float(seconds)
    n = 0
    while time.monotonic() < end:
        log.info("rec", tag=tag, n=n)
        n += 1
        time.sleep(0.002)
    print(json.dumps({"written": n}), flush=True)


if __name__ == "__main__":
    {"write": write, "write_slowly": write_slowly}[sys.argv[1]](sys.argv[2:])

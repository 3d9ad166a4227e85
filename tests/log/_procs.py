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


def write_paced(args: list[str]) -> None:
    """write_paced DIR TRACK COUNT TAG ROTATE HOST: COUNT records, ~1 ms apart."""
    log_dir, track, count, tag, rotate, host = args[:6]
    import unidist.log

    unidist.log.setup(
        dir=log_dir, rotate=rotate, keep=100000, console="off", stdlib=False, host=host
    )
    log = unidist.log.get_logger(track)
    for n in range(int(count)):
        log.info("rec", tag=tag, n=n)
        time.sleep(0.001)


def ship(args: list[str]) -> None:
    """ship URL DIR HOST BATCH: ship in follow mode until killed."""
    url, log_dir, host, batch = args[:4]
    from unidist.log.shipper import ship as run

    run(url, dir=log_dir, host=host, batch=int(batch), follow=True, interval=0.05)


def collect(args: list[str]) -> None:
    """collect URL TO BATCH: collect in follow mode until killed."""
    url, to, batch = args[:3]
    from unidist.log.collect import collect as run

    run(url, to, batch=int(batch), follow=True, interval=0.05)


if __name__ == "__main__":
    kinds = {
        "write": write,
        "write_slowly": write_slowly,
        "write_paced": write_paced,
        "ship": ship,
        "collect": collect,
    }
    kinds[sys.argv[1]](sys.argv[2:])

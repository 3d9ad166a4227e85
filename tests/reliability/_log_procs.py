"""Child processes of the log shipping scenarios: ``python _log_procs.py KIND ARGS...``.

Kinds:
    write DIR TRACK HOST COUNT ROTATE PACE_MS   COUNT records (``n`` = 0..COUNT-1) through
                                                ``unidist.log`` with size rotation ROTATE
                                                (``off`` for none), PACE_MS apart
    ship URL DIR HOST BATCH                     the shipper in follow mode until killed
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make the checkout importable
    sys.path.insert(0, str(ROOT))


def write(log_dir: str, track: str, host: str, count: str, rotate: str, pace_ms: str) -> None:
    import unidist.log

    unidist.log.setup(
        dir=log_dir, rotate=rotate, keep=100000, console="off", stdlib=False, host=host
    )
    log = unidist.log.get_logger(track)
    pace = float(pace_ms) / 1000
    for n in range(int(count)):
        log.info("rec", n=n, pad="x" * 40)
        if pace:
            time.sleep(pace)


def ship(url: str, log_dir: str, host: str, batch: str) -> None:
    from unidist.log.shipper import ship as run

    run(url, dir=log_dir, host=host, batch=int(batch), follow=True, interval=0.05)


KINDS = {"write": write, "ship": ship}

if __name__ == "__main__":
    KINDS[sys.argv[1]](*sys.argv[2:])

"""A job manager in its own process, for the kill -9 / restart tests.

Usage: ``python -m tests.cluster._jobs_manager URL BATCH RESULTS LOGDIR JOBS SLEEP HOSTS``
(HOSTS comma-separated). It runs JOBS recording jobs (see ``_jobs_common``) named
``j01``... over HOSTS one at a time per host, prints every event as a JSON line on stdout
(flushed), and exits 0 when every job is done, 1 otherwise.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.cluster._jobs_common import recording_job
from unidist.cluster.jobs import JobEvent, JobManager, JobSpec


def main(argv: list[str]) -> int:
    url, batch, results, logdir, count, sleep, hosts = argv
    jobs = [
        JobSpec(recording_job(Path(logdir), f"j{i:02d}", float(sleep)), name=f"j{i:02d}")
        for i in range(1, int(count) + 1)
    ]

    def report(event: JobEvent) -> None:
        print(json.dumps(event.to_json()), flush=True)

    manager = JobManager(
        hosts.split(","),
        backend=url,
        batch=batch,
        results_dir=results,
        on_event=report,
        heartbeat=0.5,
        lease=5,
    )
    status = manager.run(jobs)
    return 0 if status.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

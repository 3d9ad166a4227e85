"""``unidist clinit``: resource groups started at run levels (the daemon and its clients).

* ``unidist clinit --daemon [--cltab FILE] [--socket PATH] [--status-file PATH]`` runs the
  host's daemon in the foreground (``--url`` adds cluster-wide levels and status);
* ``unidist clinit GROUP LEVEL`` asks the local daemon to move GROUP to LEVEL
  (``--wait`` waits for the change and fails when the group ends FAILED);
* ``unidist clinit --cluster GROUP LEVEL`` records the desired level in shared state;
* ``unidist clinit --status`` (``--cluster`` for every host) shows the groups.

See ``docs/clinit.md``.
"""

from __future__ import annotations

from pathlib import Path

import click

from unidist.cli._common import echo_json, fmt_seconds, fmt_time, table
from unidist.cli.main import Context

_GROUP_STATE_EXIT = {"FAILED": 1}


def _parse_levels(values: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        group, sep, level = value.partition("=")
        if not sep or not group or not level:
            raise click.BadParameter(f"{value!r}: expected GROUP=LEVEL", param_hint="--level")
        out[group] = level
    return out


def _parse_backoff(value: str) -> tuple[float, float]:
    try:
        lo, hi = (float(x) for x in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected MIN,MAX", param_hint="--backoff") from None
    if not 0 <= lo <= hi:
        raise click.BadParameter(f"{value!r}: need 0 <= MIN <= MAX", param_hint="--backoff")
    return lo, hi


@click.command("clinit")
@click.argument("group", required=False)
@click.argument("level", required=False)
@click.option("--daemon", is_flag=True, help="Run this host's daemon in the foreground.")
@click.option("--status", "show_status", is_flag=True, help="Show the groups' levels and states.")
@click.option(
    "--cluster",
    is_flag=True,
    help="With GROUP LEVEL: set the desired level cluster-wide (in shared state on --url); "
    "with --status: show every host's status.",
)
@click.option("--cltab", type=click.Path(dir_okay=False, path_type=Path), help="Table file.")
@click.option(
    "--socket",
    "sock",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The daemon's UNIX socket. Default: /run/unidist/clinit.sock for root, else "
    "$XDG_RUNTIME_DIR/unidist/clinit.sock.",
)
@click.option(
    "--status-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Daemon: status file, rewritten atomically (default beside the socket).",
)
@click.option(
    "--file",
    "cluster_file",
    type=click.Path(dir_okay=False),
    envvar="CLUSTER",
    help="Cluster file (default $CLUSTER) naming the hosts of each group.",
)
@click.option("--host", help="Daemon: this host's name in the cluster file.")
@click.option(
    "--level",
    "levels",
    multiple=True,
    metavar="GROUP=LEVEL",
    help="Daemon: level of GROUP at start when none is recorded (repeatable).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Daemon: seconds between SIGTERM and SIGKILL.",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=2.0,
    show_default=True,
    help="Daemon: seconds between reads of the cluster-wide levels.",
)
@click.option(
    "--backoff",
    default="0.5,60",
    show_default=True,
    metavar="MIN,MAX",
    help="Daemon: respawn delay, doubling from MIN to MAX seconds.",
)
@click.option(
    "--stable",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    help="Daemon: a respawned process up this long resets the backoff.",
)
@click.option("--wait", is_flag=True, help="Client: wait until the level change has finished.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Client: with --wait, give up after this many seconds.",
)
@click.pass_obj
def clinit_cmd(
    obj: Context,
    group: str | None,
    level: str | None,
    daemon: bool,
    show_status: bool,
    cluster: bool,
    cltab: Path | None,
    sock: Path | None,
    status_file: Path | None,
    cluster_file: str | None,
    host: str | None,
    levels: tuple[str, ...],
    grace: float,
    poll: float,
    backoff: str,
    stable: float,
    wait: bool,
    timeout: float | None,
) -> int:
    """Move resource groups between run levels (see docs/clinit.md).

    \b
    unidist clinit --daemon [--cltab FILE]      run this host's daemon (foreground)
    unidist clinit GROUP LEVEL [--wait]         move GROUP to LEVEL on this host
    unidist clinit --cluster GROUP LEVEL        ... on every host of cluster group GROUP
    unidist clinit --status [--cluster]         show levels and states
    """
    from unidist.cluster import clinit

    if daemon:
        if group or show_status or cluster:
            raise click.UsageError("--daemon takes no GROUP LEVEL, --status or --cluster")
        lo, hi = _parse_backoff(backoff)
        socket_path = sock or clinit.default_socket()
        config = clinit.DaemonConfig(
            cltab=cltab or clinit.default_cltab(),
            socket=socket_path,
            status_file=status_file or socket_path.with_name("clinit.status"),
            url=obj.url if obj.url_given else None,
            cluster_file=cluster_file,
            host=host,
            levels=_parse_levels(levels),
            grace=grace,
            poll=poll,
            backoff_min=lo,
            backoff_max=hi,
            stable=stable,
        )
        return clinit.run_daemon(config)
    if show_status:
        if group:
            raise click.UsageError("--status takes no GROUP LEVEL")
        if cluster:
            _show_cluster(clinit.cluster_status(obj.backend()), obj.as_json)
        else:
            _show_local(clinit.status(sock), obj.as_json)
        return 0
    if not group or not level:
        raise click.UsageError("give GROUP LEVEL, --status or --daemon")
    if cluster and wait:
        raise click.UsageError(
            "--wait works with local requests; watch 'unidist clinit --status --cluster'"
        )
    try:
        if cluster:
            if cluster_file:
                from unidist.cluster.files import load

                if group not in load(cluster_file).groups:
                    raise click.ClickException(
                        f"no group {group!r} in the cluster file {cluster_file}"
                    )
            record = clinit.set_cluster_level(obj.backend(), group, level)
            if obj.as_json:
                echo_json({"group": group, **record})
            else:
                click.echo(f"{group}: desired level {level} set cluster-wide")
            return 0
        answer = clinit.set_level(group, level, sock)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not wait:
        if obj.as_json:
            echo_json(answer)
        else:
            note = f" ({answer['note']})" if answer.get("note") else ""
            click.echo(
                f"{group}: level {level} requested (was {answer.get('previous') or '-'}){note}"
            )
        return 0
    try:
        info = clinit.wait_level(group, int(answer["serial"]), sock, timeout)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from None
    if obj.as_json:
        echo_json({"group": group, **info})
    else:
        reason = f": {info['reason']}" if info.get("reason") else ""
        click.echo(f"{group}: level {info.get('level')} {info.get('state')}{reason}")
    return _GROUP_STATE_EXIT.get(str(info.get("state")), 0)


def _show_local(snap: dict[str, object], as_json: bool) -> None:
    if as_json:
        echo_json(snap)
        return
    groups = snap.get("groups")
    rows = []
    for name, info in dict(groups if isinstance(groups, dict) else {}).items():
        pids = ",".join(f"{p['tag']}={p['pid']}" for p in info.get("procs", []))
        rows.append(
            [
                name,
                info.get("level") or "-",
                info.get("state"),
                fmt_time(info.get("since")),
                pids or "-",
                info.get("reason") or "",
            ]
        )
    click.echo(table(["GROUP", "LEVEL", "STATE", "SINCE", "PIDS", "REASON"], rows))


def _show_cluster(data: dict[str, object], as_json: bool) -> None:
    if as_json:
        echo_json(data)
        return
    desired = data.get("desired")
    hosts = data.get("hosts")
    desired = desired if isinstance(desired, dict) else {}
    rows = []
    for host, snap in sorted(dict(hosts if isinstance(hosts, dict) else {}).items()):
        groups = snap.get("groups", {}) if isinstance(snap, dict) else {}
        updated = snap.get("updated") if isinstance(snap, dict) else None
        for name, info in groups.items():
            want = desired.get(name, {})
            rows.append(
                [
                    host,
                    name,
                    info.get("level") or "-",
                    want.get("level", "-") if isinstance(want, dict) else "-",
                    info.get("state"),
                    fmt_time(info.get("since")),
                    fmt_seconds(None if updated is None else max(0.0, _now() - float(updated))),
                ]
            )
    click.echo(table(["HOST", "GROUP", "LEVEL", "DESIRED", "STATE", "SINCE", "REPORTED"], rows))


def _now() -> float:
    import time

    return time.time()

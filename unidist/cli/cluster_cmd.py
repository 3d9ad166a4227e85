"""``unidist cluster groups|hosts|groups-of|members|properties``: the cluster file and the
live members from the shell.

The cluster file is ``--file PATH``, else ``$CLUSTER``; without one the cluster is just this
host. ``members`` reads the live membership in the backend (``--url``).
"""

from __future__ import annotations

import click

from unidist.cli._common import age, echo_json, fmt_seconds, table
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context
from unidist.cluster import Cluster, Membership, load


def _cluster(ctx: click.Context) -> Cluster:
    path = ctx.meta.get("unidist.cluster_file")
    return load(path)


def _lines(obj: Context, items: tuple[str, ...]) -> int:
    if obj.as_json:
        echo_json(list(items))
    else:
        for item in items:
            click.echo(item)
    return EXIT_OK


@click.group("cluster")
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False),
    envvar="CLUSTER",
    help="Cluster file (GROUP:/LUMP: format). Default: $CLUSTER, else just this host.",
)
@click.pass_context
def cluster_group(ctx: click.Context, path: str | None) -> None:
    """The cluster file's groups and hosts, and the live members.

    \b
    Examples:
      unidist cluster groups
      unidist cluster hosts web           # the hosts of group or lump "web"
      unidist cluster groups-of db1.example.com
      unidist cluster members --group web
      unidist cluster properties --json
    """
    ctx.meta["unidist.cluster_file"] = path or None


@cluster_group.command("groups")
@click.pass_context
def groups_cmd(ctx: click.Context) -> int:
    """Print the groups and lumps of the cluster file, in file order."""
    return _lines(ctx.obj, _cluster(ctx).groups)


@cluster_group.command("hosts")
@click.argument("group", required=False)
@click.pass_context
def hosts_cmd(ctx: click.Context, group: str | None) -> int:
    """Print every host, or the hosts of GROUP (a group, a lump, __orphans__ or __all__)."""
    cluster = _cluster(ctx)
    if group is None:
        return _lines(ctx.obj, cluster.hosts)
    try:
        hosts = cluster.group(group)
    except KeyError:
        click.echo(f"unidist: error: no group {group!r} in the cluster file", err=True)
        return EXIT_ERROR
    return _lines(ctx.obj, hosts)


@cluster_group.command("groups-of")
@click.argument("host")
@click.pass_context
def groups_of_cmd(ctx: click.Context, host: str) -> int:
    """Print the groups and lumps HOST belongs to (with __orphans__ for an orphan host)."""
    return _lines(ctx.obj, _cluster(ctx).groups_of(host))


@cluster_group.command("properties")
@click.pass_context
def properties_cmd(ctx: click.Context) -> int:
    """Print the flat view: groups.NAME, hosts.HOST, hostname, shortname."""
    props = _cluster(ctx).properties()
    if ctx.obj.as_json:
        echo_json({k: v if isinstance(v, str) else list(v) for k, v in props.items()})
    else:
        for key, value in props.items():
            click.echo(f"{key}={value if isinstance(value, str) else ' '.join(value)}")
    return EXIT_OK


@cluster_group.command("members")
@click.option("--group", "-g", help="Only members of this group.")
@click.pass_obj
def members_cmd(obj: Context, group: str | None) -> int:
    """Print the live members (in the backend given by --url)."""
    view = Membership(obj.backend(), member_id="cli", groups=(), current=False)
    live = view.members(group=group)
    if obj.as_json:
        echo_json([m.to_dict() for m in live])
        return EXIT_OK
    if not live:
        click.echo("no live members")
        return EXIT_OK
    rows = [
        (
            m.id,
            m.host,
            m.pid,
            ",".join(m.groups) or "-",
            fmt_seconds(age(m.joined_at)),
            fmt_seconds(age(m.last_seen)),
        )
        for m in live
    ]
    click.echo(table(("MEMBER", "HOST", "PID", "GROUPS", "UP", "SEEN"), rows))
    return EXIT_OK

"""``unidist state get|set|del|list|buckets``: shared key -> JSON buckets from the shell."""

from __future__ import annotations

import click

from unidist.cli._common import dumps, echo_json, parse_value, show_value
from unidist.cli.main import EXIT_ERROR, EXIT_OK, Context
from unidist.state import SharedState

_RAW_HELP = "Print a string value without JSON quotes (like jq -r)."


def _bucket(obj: Context, bucket: str) -> SharedState:
    return SharedState(bucket, backend=obj.backend())


def _missing(bucket: str, key: str) -> int:
    click.echo(f"unidist: error: key {key!r} is not in bucket {bucket!r}", err=True)
    return EXIT_ERROR


@click.group("state")
def state_group() -> None:
    """Shared state buckets: named maps of key -> JSON value.

    \b
    Examples:
      unidist state set config retries 3
      unidist state set config owner alice          # not JSON: stored as "alice"
      unidist state set config port 8080 --string   # the string "8080"
      unidist state get config retries              # -> 3
      unidist state list config                     # -> {"owner": "alice", ...}
    """


@state_group.command("get")
@click.argument("bucket")
@click.argument("key")
@click.option("--raw", "-r", is_flag=True, help=_RAW_HELP)
@click.pass_obj
def state_get(obj: Context, bucket: str, key: str, raw: bool) -> int:
    """Print the JSON value of KEY in BUCKET; a missing key exits 1."""
    state = _bucket(obj, bucket)
    sentinel = object()
    value = state.get(key, sentinel)
    if value is sentinel:
        return _missing(bucket, key)
    click.echo(show_value(value, raw and not obj.as_json))  # type: ignore[arg-type]
    return EXIT_OK


@state_group.command("set")
@click.argument("bucket")
@click.argument("key")
@click.argument("value")
@click.option("--string", "-s", "as_string", is_flag=True, help="Store VALUE as a string.")
@click.pass_obj
def state_set(obj: Context, bucket: str, key: str, value: str, as_string: bool) -> int:
    """Store VALUE under KEY in BUCKET.

    VALUE is parsed as JSON (3, true, null, "x", [1,2], {"a":1}); text that is not valid
    JSON is stored as a plain string; --string always stores a string. Prints nothing
    (--json: the stored record).
    """
    parsed = parse_value(value, as_string)
    _bucket(obj, bucket)[key] = parsed
    if obj.as_json:
        echo_json({"bucket": bucket, "key": key, "value": parsed})
    return EXIT_OK


@state_group.command("del")
@click.argument("bucket")
@click.argument("key")
@click.option("--missing-ok", is_flag=True, help="Exit 0 even if KEY was not there.")
@click.pass_obj
def state_del(obj: Context, bucket: str, key: str, missing_ok: bool) -> int:
    """Delete KEY from BUCKET; a missing key exits 1 (unless --missing-ok)."""
    sentinel = object()
    old = _bucket(obj, bucket).pop(key, sentinel)
    if old is sentinel:
        return EXIT_OK if missing_ok else _missing(bucket, key)
    if obj.as_json:
        echo_json({"bucket": bucket, "key": key, "value": old})
    return EXIT_OK


@state_group.command("list")
@click.argument("bucket")
@click.pass_obj
def state_list(obj: Context, bucket: str) -> int:
    """Print BUCKET as one JSON object (a consistent snapshot; {} when empty)."""
    snap = _bucket(obj, bucket).snapshot()
    click.echo(dumps(snap, pretty=not obj.as_json))
    return EXIT_OK


@state_group.command("buckets")
@click.pass_obj
def state_buckets(obj: Context) -> int:
    """List the buckets that hold at least one key, one per line (--json: an array)."""
    names = obj.backend().buckets()
    if obj.as_json:
        echo_json(names)
    else:
        for name in names:
            click.echo(name)
    return EXIT_OK


__all__ = ["state_group"]

"""``unidist counter get|incr|decr|set|reset|list``: atomic shared counters from the shell."""

from __future__ import annotations

import click

from unidist.cli._common import echo_json, table
from unidist.cli.main import EXIT_OK, Context
from unidist.counter import INT64_MAX, INT64_MIN, SharedCounter

# "-5" is a value here, not an unknown option.
_NUMERIC = {"ignore_unknown_options": True}
_INT64 = click.IntRange(INT64_MIN, INT64_MAX)


def _show(obj: Context, name: str, value: int) -> int:
    if obj.as_json:
        echo_json({"name": name, "value": value})
    else:
        click.echo(str(value))
    return EXIT_OK


def _counter(obj: Context, name: str) -> SharedCounter:
    return SharedCounter(name, backend=obj.backend())


@click.group("counter")
def counter_group() -> None:
    """Atomic shared counters (signed 64-bit, starting at 0); each command prints the value.

    \b
    Examples:
      unidist counter incr jobs          # -> 1
      unidist counter incr jobs 10       # -> 11
      id=$(unidist counter incr build-id)
    """


@counter_group.command("get")
@click.argument("name")
@click.pass_obj
def counter_get(obj: Context, name: str) -> int:
    """Print the value of counter NAME (0 if it was never set)."""
    return _show(obj, name, _counter(obj, name).get())


@counter_group.command("incr", context_settings=_NUMERIC)
@click.argument("name")
@click.argument("n", type=_INT64, default=1, required=False)
@click.pass_obj
def counter_incr(obj: Context, name: str, n: int) -> int:
    """Add N (default 1) to counter NAME atomically and print the new value."""
    return _show(obj, name, _counter(obj, name).incr(n))


@counter_group.command("decr", context_settings=_NUMERIC)
@click.argument("name")
@click.argument("n", type=_INT64, default=1, required=False)
@click.pass_obj
def counter_decr(obj: Context, name: str, n: int) -> int:
    """Subtract N (default 1) from counter NAME atomically and print the new value."""
    return _show(obj, name, _counter(obj, name).decr(n))


@counter_group.command("set", context_settings=_NUMERIC)
@click.argument("name")
@click.argument("value", type=_INT64)
@click.pass_obj
def counter_set(obj: Context, name: str, value: int) -> int:
    """Set counter NAME to VALUE and print it."""
    counter = _counter(obj, name)
    counter.set(value)
    return _show(obj, name, value)


@counter_group.command("reset")
@click.argument("name")
@click.pass_obj
def counter_reset(obj: Context, name: str) -> int:
    """Set counter NAME back to 0 and print 0."""
    _counter(obj, name).reset()
    return _show(obj, name, 0)


@counter_group.command("list")
@click.pass_obj
def counter_list(obj: Context) -> int:
    """List every counter with its value (--json: an object of name -> value)."""
    counters = obj.backend().counters()
    if obj.as_json:
        echo_json(counters)
    elif counters:
        click.echo(table(["NAME", "VALUE"], sorted(counters.items())))
    return EXIT_OK


__all__ = ["counter_group"]

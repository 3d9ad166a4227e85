"""``unidist queue put|get|stats|dead|requeue|purge|list|work``: work queues from the shell.

``queue work NAME -- CMD`` turns any program into an at-least-once worker: each message's
body goes to CMD's stdin, exit 0 acks it, anything else gives it back for redelivery (and
after ``--max-attempts`` deliveries it lands on the dead list).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence

import click

from unidist.cli._common import dumps, echo_json, parse_value, show_value, table
from unidist.cli._proc import ChildResult, SignalForwarder, run_child
from unidist.cli.main import EXIT_EMPTY, EXIT_ERROR, EXIT_OK, Context
from unidist.errors import Empty
from unidist.queue import MAX_PRIORITY, Message, MessageQueue

_RAW_HELP = "Print a string body without JSON quotes (like jq -r)."
_WAIT_SLICE = 0.5


def _queue(obj: Context, name: str, **kwargs: float) -> MessageQueue:
    return MessageQueue(name, backend=obj.backend(), **kwargs)  # type: ignore[arg-type]


@click.group("queue")
def queue_group() -> None:
    """Persistent, at-least-once work queues of JSON messages.

    \b
    Examples:
      unidist queue put work '{"file": "a.csv"}'     # prints the message id
      unidist queue put work hello --delay 60        # ready in a minute
      unidist queue get work --timeout 5             # prints the body; exit 3 if none
      unidist queue work work --idle 10 -- ./process-one.sh   # body on stdin
      unidist queue stats work
    """


@queue_group.command("put")
@click.argument("name")
@click.argument("value")
@click.option("--delay", type=click.FloatRange(min=0), default=0.0, help="Seconds until ready.")
@click.option(
    "--priority",
    type=click.IntRange(-MAX_PRIORITY, MAX_PRIORITY),
    default=0,
    help="Higher leaves first (default 0).",
)
@click.option("--string", "-s", "as_string", is_flag=True, help="Send VALUE as a string.")
@click.option("--id", "msg_id", help="Your own message id: a second put with it adds nothing.")
@click.pass_obj
def queue_put(
    obj: Context,
    name: str,
    value: str,
    delay: float,
    priority: int,
    as_string: bool,
    msg_id: str | None,
) -> int:
    """Put VALUE on queue NAME and print the message id.

    VALUE is parsed as JSON, or sent as a plain string when it is not valid JSON
    (--string forces a string).
    """
    body = parse_value(value, as_string)
    new_id = _queue(obj, name).put(body, delay=delay, priority=priority, id=msg_id)
    if obj.as_json:
        echo_json({"queue": name, "id": new_id})
    else:
        click.echo(new_id)
    return EXIT_OK


@queue_group.command("get")
@click.argument("name")
@click.option(
    "--timeout",
    "-t",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds to wait for a message (default 0: do not wait).",
)
@click.option("--raw", "-r", is_flag=True, help=_RAW_HELP)
@click.pass_obj
def queue_get(obj: Context, name: str, timeout: float, raw: bool) -> int:
    """Remove the next message of queue NAME and print its body as JSON.

    The message is acknowledged at once (use 'queue work' for at-least-once processing).
    If no message is ready within --timeout: exit 3, nothing on stdout.
    """
    q = _queue(obj, name)
    try:
        body = q.get(block=timeout > 0, timeout=timeout if timeout > 0 else None)
    except Empty:
        return EXIT_EMPTY
    click.echo(show_value(body, raw and not obj.as_json))
    return EXIT_OK


@queue_group.command("stats")
@click.argument("name")
@click.pass_obj
def queue_stats(obj: Context, name: str) -> int:
    """Print the counts of ready, delayed, in-flight and dead messages of queue NAME."""
    stats = _queue(obj, name).stats()
    if obj.as_json:
        echo_json(stats)
    else:
        click.echo(" ".join(f"{k}={stats[k]}" for k in ("ready", "delayed", "in_flight", "dead")))
    return EXIT_OK


@queue_group.command("list")
@click.pass_obj
def queue_list(obj: Context) -> int:
    """List the queues holding any message, with their counts."""
    be = obj.backend()
    rows = {name: be.queue_stats(name) for name in be.queues()}
    if obj.as_json:
        echo_json(rows)
    elif rows:
        click.echo(
            table(
                ["NAME", "READY", "DELAYED", "IN_FLIGHT", "DEAD"],
                [
                    [n, s["ready"], s["delayed"], s["in_flight"], s["dead"]]
                    for n, s in sorted(rows.items())
                ],
            )
        )
    return EXIT_OK


@queue_group.command("dead")
@click.argument("name")
@click.pass_obj
def queue_dead(obj: Context, name: str) -> int:
    """Show the dead messages of queue NAME (delivered --max-attempts times, never acked).

    Human output: one line per message (id, attempts, body). --json: an array of
    {id, attempts, priority, enqueued_at, body}. 'unidist queue requeue NAME' retries them.
    """
    dead = _queue(obj, name).dead()
    if obj.as_json:
        echo_json(
            [
                {
                    "id": m.id,
                    "attempts": m.attempts,
                    "priority": m.priority,
                    "enqueued_at": m.enqueued_at,
                    "body": m.body,
                }
                for m in dead
            ]
        )
    else:
        for m in dead:
            click.echo(f"{m.id}  attempts={m.attempts}  {dumps(m.body)}")
    return EXIT_OK


@queue_group.command("requeue")
@click.argument("name")
@click.pass_obj
def queue_requeue(obj: Context, name: str) -> int:
    """Make every dead message of queue NAME ready again; print how many."""
    n = _queue(obj, name).requeue_dead()
    if obj.as_json:
        echo_json({"queue": name, "requeued": n})
    else:
        click.echo(str(n))
    return EXIT_OK


@queue_group.command("purge")
@click.argument("name")
@click.option("--dead", is_flag=True, help="Also empty the dead list.")
@click.pass_obj
def queue_purge(obj: Context, name: str, dead: bool) -> int:
    """Remove the ready and delayed messages of queue NAME; print how many.

    In-flight messages (being worked on) are left alone.
    """
    n = _queue(obj, name).purge(dead=dead)
    if obj.as_json:
        echo_json({"queue": name, "purged": n})
    else:
        click.echo(str(n))
    return EXIT_OK


@queue_group.command("work", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("name")
@click.option("--max", "max_messages", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option(
    "--idle",
    type=click.FloatRange(min=0),
    help="Stop when no message arrived for S seconds (default: wait forever).",
)
@click.option(
    "--visibility",
    type=click.FloatRange(min=0, min_open=True),
    default=300.0,
    show_default=True,
    help="Seconds a message stays invisible while CMD runs; keep it above CMD's longest "
    "run, or a slow message is delivered a second time.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Deliveries before a failing message goes to the dead list.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds before a failed message is ready again (default 0).",
)
@click.option("--raw", "-r", is_flag=True, help="Write a string body without JSON quotes.")
@click.argument("cmd", nargs=-1, required=True, metavar="-- CMD [ARGS]...")
@click.pass_obj
def queue_work(
    obj: Context,
    name: str,
    max_messages: int | None,
    idle: float | None,
    visibility: float,
    max_attempts: int,
    retry_delay: float,
    raw: bool,
    cmd: tuple[str, ...],
) -> int:
    """Run CMD once per message of queue NAME, with the body (JSON) on its stdin.

    Exit 0 acks the message; any other exit gives it back (delivered again, up to
    --max-attempts times, then dead). CMD also gets UNIDIST_QUEUE, UNIDIST_MESSAGE_ID and
    UNIDIST_ATTEMPTS in its environment. Runs until SIGTERM/SIGINT (a running CMD gets the
    signal and finishes first), --max N messages, or --idle S seconds without a message.
    Prints a summary on stderr (--json: on stdout). Exit code: 0, or 1 if any CMD failed.
    """
    q = _queue(obj, name, visibility_timeout=visibility, max_attempts=max_attempts)
    done = ok = failed = 0
    started = time.monotonic()
    last_message = started
    with SignalForwarder() as fwd:
        while not fwd.received and (max_messages is None or done < max_messages):
            wait = _WAIT_SLICE
            if idle is not None:
                left = idle - (time.monotonic() - last_message)
                if left <= 0:
                    break
                wait = min(wait, left)
            try:
                msg = q.receive(timeout=wait)
            except Empty:
                continue
            result = _work_one(q, msg, raw, cmd, fwd, retry_delay)
            last_message = time.monotonic()
            done += 1
            if result.exit_code == 0:
                ok += 1
            else:
                failed += 1
            if result.error is not None:  # CMD cannot be started: stop, don't drain the queue
                _summary(obj, name, done, ok, failed, started, fwd.stop_signal)
                return result.exit_code
    _summary(obj, name, done, ok, failed, started, fwd.stop_signal)
    return EXIT_ERROR if failed else EXIT_OK


def _work_one(
    q: MessageQueue,
    msg: Message,
    raw: bool,
    cmd: Sequence[str],
    fwd: SignalForwarder,
    retry_delay: float,
) -> ChildResult:
    data = show_value(msg.body, raw) + "\n"
    env = {
        "UNIDIST_QUEUE": q.name,
        "UNIDIST_MESSAGE_ID": msg.id,
        "UNIDIST_ATTEMPTS": str(msg.attempts),
    }
    result = run_child(cmd, fwd, env=env, stdin_data=data.encode("utf-8"))
    if result.exit_code == 0:
        if not msg.ack():
            click.echo(
                f"unidist: warning: message {msg.id} was redelivered before CMD finished "
                "(raise --visibility)",
                err=True,
            )
    else:
        msg.nack(delay=retry_delay)
    return result


def _summary(
    obj: Context,
    name: str,
    done: int,
    ok: int,
    failed: int,
    started: float,
    stop: int | None,
) -> None:
    seconds = round(time.monotonic() - started, 3)
    stopped_by = signal.Signals(stop).name if stop is not None else None
    record = {
        "queue": name,
        "messages": done,
        "ok": ok,
        "failed": failed,
        "seconds": seconds,
        "stopped_by": stopped_by,
    }
    if obj.as_json:
        echo_json(record)
    else:
        why = f", stopped by {stopped_by}" if stopped_by else ""
        click.echo(
            f"unidist: queue {name!r}: {done} messages in {seconds}s "
            f"({ok} ok, {failed} failed){why}",
            err=True,
        )


__all__ = ["queue_group"]

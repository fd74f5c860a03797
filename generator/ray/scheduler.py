"""A work queue over a pool of Ray actors: one item per actor at a time, retries elsewhere, a retry limit.

An item whose call raises (an ordinary error) or whose actor dies (process killed, node lost) goes back to the
front of the queue and is taken by the next free actor (a dead actor is restarted by Ray, reloading its models);
after `max_retries` retries it is reported as failed, never dropped. A dead actor gets work again only once it
answers `ready()` (a call to a restarting actor fails at once and would burn the item's retries). Every wait is bounded: a pool that makes no
progress for `stall_timeout` seconds (actors that cannot be placed, a hung node) stops the run with what is missing.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from generator.ray.errors import RayEngineError

POLL_SECONDS = 1.0
_PING = object()  # an in-flight readiness check of a restarting actor, not an item


@dataclass
class Outcome:
    """Results by item, failures and retries ({"item", "attempt", "error"}) of one pool run."""

    results: dict = field(default_factory=dict)
    failures: list = field(default_factory=list)
    retries: list = field(default_factory=list)


def error_line(err: BaseException) -> str:
    """The last meaningful line of a Ray error (the remote exception's own message), kept short."""
    import ray

    if isinstance(err, ray.exceptions.RayTaskError):
        cause = err.as_instanceof_cause()
        text = str(getattr(cause, "cause", None) or cause)
    else:
        text = str(err)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else type(err).__name__
    return f"{type(err).__name__}: {line}"[:500]


def _creation_failure(err: BaseException) -> str | None:
    """The error an actor's __init__ raised (a deterministic failure: retrying elsewhere would not help)."""
    import ray

    if isinstance(err, ray.exceptions.ActorDiedError) and "creation task" in str(err):
        return error_line(err)
    return None


def run_pool(actors: Sequence, items: Sequence, call: Callable, *, max_retries: int, stall_timeout: float,
             on_result: Callable = lambda item, value: None, on_retry: Callable = lambda item, error: None,
             what: str = "items") -> Outcome:
    """Run `call(actor, item) -> ObjectRef` for every item over `actors`; see the module docstring."""
    import ray

    queue, free = deque(items), deque(range(len(actors)))
    attempts: Counter = Counter()
    inflight: dict = {}
    outcome = Outcome()
    last_progress = time.monotonic()
    while queue or any(item is not _PING for _, item in inflight.values()):
        while queue and free:
            slot, item = free.popleft(), queue.popleft()
            attempts[item] += 1
            inflight[call(actors[slot], item)] = (slot, item)
        ready, _ = ray.wait(list(inflight), num_returns=1, timeout=POLL_SECONDS)
        if not ready:
            if time.monotonic() - last_progress > stall_timeout:
                waiting = sorted((str(item) for _, item in inflight.values() if item is not _PING), key=str) or \
                    [str(i) for i in queue]
                raise RayEngineError(f"no progress for {stall_timeout:.0f} s on {len(waiting)} {what} (first: "
                                     f"{waiting[0] if waiting else '-'}): the cluster may lack the resources the "
                                     "actors ask for (ray status), or a node hangs")
            continue
        ref = ready[0]
        slot, item = inflight.pop(ref)
        try:
            value = ray.get(ref)
        except Exception as err:  # noqa: BLE001 - any remote failure is this item's, handled below
            if (created := _creation_failure(err)) is not None:
                raise RayEngineError(f"a Ray actor could not start: {created}") from None
            if isinstance(err, ray.exceptions.RayActorError):  # died or restarting: wait until it answers again
                time.sleep(0.2 if item is _PING else 0)
                inflight[actors[slot].ready.remote()] = (slot, _PING)
                if item is _PING:
                    continue
                if isinstance(err, ray.exceptions.ActorUnavailableError) and "restarting" in str(err):
                    attempts[item] -= 1  # never ran: refused by an actor that was already restarting
                    queue.appendleft(item)
                    continue
            else:
                free.append(slot)
            line = error_line(err)
            if attempts[item] <= max_retries:
                outcome.retries.append({"item": item, "attempt": attempts[item], "error": line})
                queue.appendleft(item)  # the next free actor takes it: elsewhere, when another one is free
                on_retry(item, line)
            else:
                outcome.failures.append({"item": item, "attempts": attempts[item], "error": line})
            continue
        free.append(slot)
        if item is _PING:
            continue
        last_progress = time.monotonic()
        outcome.results[item] = value
        on_result(item, value)
    return outcome

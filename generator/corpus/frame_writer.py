"""What runs inside one writer process: the message loop around `VideoFileWriter` (thermvision_db.io.video_writer).

The pool's side (queues, results, errors in the main process) is `generator.corpus.writers`.
"""

from __future__ import annotations

import logging
import os
import queue
import traceback

from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec

POLL_SECONDS = 0.5
log = logging.getLogger(__name__)


def describe_error(err: BaseException, filename: str) -> tuple:
    """A picklable description of a failure: message naming the file, the errno, the traceback text."""
    errno = getattr(err, "errno", None)
    message = f"writing {filename} failed: {type(err).__name__}: {err}"
    return message, filename, errno, traceback.format_exc(limit=4)


def writer_process(tasks, results, parent_pid: int) -> None:
    """A writer process: open / frame / close / abort messages for its jobs, until 'stop' or the parent dies."""
    import signal

    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle: it stops the pool
    cv2.setNumThreads(1)  # one core per writer process; parallelism is the pool's
    writers: dict[int, VideoFileWriter] = {}

    def fail(job: int, err: BaseException, filename: str) -> None:
        writer = writers.pop(job, None)
        if writer is not None:
            writer.abort()
        results.put(("error", job, *describe_error(err, filename)))

    while True:
        try:
            message = tasks.get(timeout=POLL_SECONDS)
        except queue.Empty:
            message = None
        if os.getppid() != parent_pid:  # the main process was killed: stop at once, leave nothing running
            break
        if message is None:
            continue
        kind, job = message[0], message[1] if len(message) > 1 else None
        if kind == "stop":
            break
        if kind == "open":
            spec = VideoSpec(**message[2])
            try:
                writers[job] = VideoFileWriter(spec)
            except BaseException as err:
                fail(job, err, spec.mp4)
        elif kind == "frame" and job in writers:
            writer = writers[job]
            try:
                writer.write(message[2])
            except BaseException as err:
                fail(job, err, writer.current)
        elif kind == "close" and job in writers:  # a failed job has no writer left: its error is already sent
            writer = writers.pop(job)
            try:
                results.put(("done", job, writer.close()))
            except BaseException as err:
                writer.abort()
                results.put(("error", job, *describe_error(err, writer.current)))
        elif kind == "abort":
            writer = writers.pop(job, None)
            if writer is not None:
                writer.abort()
            results.put(("aborted", job))  # the caller may now remove the folder: nothing more is written
    for writer in writers.values():
        writer.abort()

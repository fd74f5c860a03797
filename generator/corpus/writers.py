"""PNG frames and H.264 videos written by a pool of processes, off the loop that feeds the GPU.

    with WriterPool(processes=2) as pool:
        job = pool.open(VideoSpec(mp4="S1/head_pose.mp4", png_dir="S1/head_pose_frames", fps=30.0))
        for frame in frames:
            job.write(frame)          # blocks only when the writers are `queue_frames` frames behind
        job.close()                   # returns at once; job.result() waits for the finished files

One video is one job and goes to one process, whose single encoder thread sees its frames in order: the bytes
are those of an inline write (`processes=0`), whatever the number of processes. Parallelism is across videos and
identities. Each process has a bounded queue, so memory stays flat however far the GPU runs ahead. A failure in
a writer is raised in the main process as `WriterError` naming the file (with the errno of the cause, so a full
disk is still recognised); a writer process that dies is reported too. Writer processes exit on their own when
the main process is killed. Frames travel through `multiprocessing` queues between this process and the
children it spawned; no user file is ever unpickled.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import sys
import time
from dataclasses import asdict

import numpy as np

from generator.corpus.frame_writer import POLL_SECONDS, describe_error, writer_process
from thermvision_db.errors import InputError
from thermvision_db.io.encode import shared_channels
from thermvision_db.io.video_writer import VideoFileWriter, VideoSpec
from thermvision_db.schema.generated_corpus import CorpusError

__all__ = ["VideoFileWriter", "VideoJob", "VideoSpec", "WriterError", "WriterPool", "default_writer_processes"]


class WriterError(CorpusError):
    """A frame or video writer failed; `filename` is the file, `errno` the OS error number when there was one."""

    def __init__(self, message: str, filename: str | None = None, errno: int | None = None):
        super().__init__(message)
        self.filename = filename
        self.errno = errno


class VideoJob:
    """The main process's handle on one video being written (inline or by a writer process)."""

    def __init__(self, pool: "WriterPool", job_id: int, spec: VideoSpec, slot: int | None):
        self.pool, self.id, self.spec, self.slot = pool, job_id, spec, slot
        self.closed = False
        self._inline: VideoFileWriter | None = None

    def write(self, frame: np.ndarray) -> None:
        """Hand one (H, W, 3) or (H, W) uint8 frame to the writer; raises an earlier writer failure of this job.

        A frame whose three channels are one memory (the animator's gray output) travels as its one plane: the
        writer stores gray frames as one channel anyway, so the files are the same and a third of the bytes
        are copied to the writer process."""
        frame = np.asarray(frame)
        self.pool._write(self, np.ascontiguousarray(frame[..., 0] if shared_channels(frame) else frame))

    def close(self) -> None:
        """No more frames: the writer flushes the video in the background."""
        self.pool._close(self)
        self.closed = True

    def abort(self) -> None:
        """Drop the job and its partial MP4 (the caller removes the identity folder)."""
        self.pool._abort(self)

    def done(self) -> bool:
        return self.pool._done(self)

    def result(self, timeout: float | None = None) -> dict:
        """Wait until the files are complete; raises `WriterError` naming the file when they could not be."""
        return self.pool._result(self, timeout)


class WriterPool:
    """`processes` writer processes (0: write inline, in the calling process) with `queue_frames` frames each."""

    def __init__(self, processes: int = 1, queue_frames: int = 32):
        if processes < 0 or queue_frames < 1:
            raise InputError(f"need processes >= 0 and queue_frames >= 1, got {processes}, {queue_frames}")
        self.processes = int(processes)
        self.queue_frames = int(queue_frames)
        self._ids = itertools.count()
        self._outcomes: dict[int, tuple] = {}
        self._load: list[int] = [0] * self.processes
        self._procs: list = []
        self._tasks: list = []
        self.cpu_seconds = 0.0  # writer CPU time of finished jobs, summed over processes
        self.wait_seconds = 0.0  # time the calling process spent blocked on the writers
        self._results = None
        if self.processes:
            import multiprocessing

            context = multiprocessing.get_context("spawn")  # no fork of a process holding CUDA or torch threads
            self._results = context.Queue()
            for _ in range(self.processes):
                tasks = context.Queue(maxsize=self.queue_frames)
                proc = context.Process(target=writer_process, args=(tasks, self._results, os.getpid()),
                                       daemon=True, name="thermvision-writer")
                with _main_module_hidden():
                    proc.start()
                self._tasks.append(tasks)
                self._procs.append(proc)

    # -- jobs
    def open(self, spec: VideoSpec) -> VideoJob:
        """Start one video; it goes to the least busy writer process."""
        job_id = next(self._ids)
        if not self.processes:
            job = VideoJob(self, job_id, spec, None)
            try:
                job._inline = VideoFileWriter(spec)
            except BaseException as err:
                raise self._as_error(err, spec.mp4) from err
            return job
        slot = min(range(self.processes), key=self._load.__getitem__)
        self._load[slot] += 1
        job = VideoJob(self, job_id, spec, slot)
        self._put(job, ("open", job_id, asdict(spec)))
        return job

    def _write(self, job: VideoJob, frame: np.ndarray) -> None:
        if job._inline is not None:
            try:
                job._inline.write(frame)
            except BaseException as err:
                job._inline.abort()
                raise self._as_error(err, job._inline.current) from err
            return
        self._raise_if_failed(job)
        self._put(job, ("frame", job.id, frame))

    def _close(self, job: VideoJob) -> None:
        if job._inline is not None:
            writer, job._inline = job._inline, None
            try:
                self._outcomes[job.id] = ("done", writer.close())
            except BaseException as err:
                writer.abort()
                raise self._as_error(err, writer.current) from err
            self.cpu_seconds += writer.cpu_seconds
            return
        self._put(job, ("close", job.id))

    def _abort(self, job: VideoJob) -> None:
        if job._inline is not None:
            job._inline.abort()
            job._inline = None
        elif job.slot is not None and job.id not in self._outcomes and self._procs[job.slot].is_alive():
            self._put(job, ("abort", job.id), check=False)
            deadline = time.monotonic() + 60  # the frames queued before the abort are dropped or written first
            while job.id not in self._outcomes and self._procs[job.slot].is_alive() and time.monotonic() < deadline:
                self._drain(block=True)
        self._finish(job)

    def _done(self, job: VideoJob) -> bool:
        self._drain()
        return job.id in self._outcomes

    def _result(self, job: VideoJob, timeout: float | None) -> dict:
        if not job.closed:
            raise RuntimeError("close() the job before asking for its result")
        start = time.perf_counter()
        deadline = None if timeout is None else time.monotonic() + timeout
        while job.id not in self._outcomes:
            self._drain(block=True)
            if job.id not in self._outcomes:
                self._check_alive(job)
                if deadline is not None and time.monotonic() > deadline:
                    raise TimeoutError(f"writing {job.spec.mp4} did not finish within {timeout} s")
        self.wait_seconds += time.perf_counter() - start
        self._raise_if_failed(job)
        self._finish(job)
        return self._outcomes[job.id][1]

    # -- plumbing
    def _put(self, job: VideoJob, message: tuple, check: bool = True) -> None:
        """Put with back-pressure; while blocked, notice a failed job or a dead writer process."""
        tasks = self._tasks[job.slot]
        try:
            tasks.put_nowait(message)
            return
        except queue.Full:
            pass
        start = time.perf_counter()
        while True:
            try:
                tasks.put(message, timeout=POLL_SECONDS)
                break
            except queue.Full:
                if check:
                    self._raise_if_failed(job)
                    self._check_alive(job)
                elif not self._procs[job.slot].is_alive():
                    break
        self.wait_seconds += time.perf_counter() - start

    def _drain(self, block: bool = False) -> None:
        while self._results is not None:
            try:
                message = self._results.get(timeout=POLL_SECONDS) if block else self._results.get_nowait()
            except queue.Empty:
                return
            block = False
            kind, job_id = message[0], message[1]
            self._outcomes[job_id] = (kind, *message[2:])
            if kind == "done":
                self.cpu_seconds += message[2]["cpu_seconds"]

    def _raise_if_failed(self, job: VideoJob) -> None:
        self._drain()
        outcome = self._outcomes.get(job.id)
        if outcome and outcome[0] == "error":
            self._finish(job)
            message, filename, errno, _trace = outcome[1:]
            raise WriterError(message, filename=filename, errno=errno)

    def _check_alive(self, job: VideoJob) -> None:
        proc = self._procs[job.slot]
        if not proc.is_alive():
            self._drain()
            if job.id not in self._outcomes:
                raise WriterError(f"the writer process for {job.spec.mp4} died (exit code {proc.exitcode}); "
                                  "its identity is not finished", filename=job.spec.mp4)

    def _finish(self, job: VideoJob) -> None:
        if job.slot is not None and not getattr(job, "_counted_off", False):
            job._counted_off = True
            self._load[job.slot] -= 1

    @staticmethod
    def _as_error(err: BaseException, filename: str) -> WriterError:
        message, filename, errno, _ = describe_error(err, filename)
        return WriterError(message, filename=filename, errno=errno)

    # -- lifetime
    def close(self, timeout: float = 30.0) -> None:
        """Stop the writer processes (jobs not yet closed are dropped with their partial files)."""
        for tasks, proc in zip(self._tasks, self._procs):
            if proc.is_alive():
                try:
                    tasks.put(("stop",), timeout=timeout)
                except queue.Full:
                    proc.terminate()
        for proc in self._procs:
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
        self._procs, self._tasks = [], []
        self.processes = 0

    def __enter__(self) -> "WriterPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextlib.contextmanager
def _main_module_hidden():
    """Spawned children re-run the parent's main script or module (a CLI, a benchmark importing torch: seconds of
    CPU per child). A writer needs only this module, so the main module is hidden while the child starts."""
    main = sys.modules.get("__main__")
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if main is not None and k in main.__dict__}
    try:
        for key in saved:
            setattr(main, key, None) if key == "__spec__" else delattr(main, key)
        yield
    finally:
        for key, value in saved.items():
            setattr(main, key, value)


def default_writer_processes(env=None) -> int:
    """Cores per launcher process on this node, minus the one feeding the GPU; at least 1, at most 4."""
    env = os.environ if env is None else env
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        cores = os.cpu_count() or 1
    local = int(env.get("LOCAL_WORLD_SIZE", env.get("SLURM_NTASKS_PER_NODE", "1")) or 1)
    return max(1, min(4, cores // max(local, 1) - 1))

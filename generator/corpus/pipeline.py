"""identity -> still -> videos -> labels -> corpus on disk; resumable, sharded, data parallel.

    settings = GenerationSettings(preset="tiny", motion="short")
    summary = GenerationPipeline(settings, "out/").run(num_identities=500)

One identity is one unit of work. Its still comes from (run seed, index) alone, so any process can make it;
its folder is written under a temporary name and renamed when complete, so a killed run leaves no half
identity and a rerun redoes exactly the unfinished ones. Processes split the work by block of `still_batch`
identities (`block % workers == worker`), with workers = torchrun/accelerate ranks x `--shard i/n`: every
still is made in the same batch whatever the number of processes, so the corpus is the same as one process's.
The optional distinctness filter needs every candidate still before deciding, so with it the processes meet
at a file barrier between the stills and the animation.
PNG frames and H.264 videos are written by a pool of writer processes (corpus/writers.py) while the next identity is
animated; an identity is renamed into place only after its writers have finished.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from generator.corpus.barrier import DEFAULT_TIMEOUT_MINUTES, announce, wait_for
from generator.corpus.claims import Claims, move_into_place
from generator.corpus.models import load_animator, load_annotators, load_stills_generator, weight_records
from generator.corpus.motion_plan import MotionPlan
from generator.corpus.settings import GenerationSettings
from generator.corpus.summary import RunSummary
from generator.corpus.videos import PendingIdentity, write_video
from generator.corpus.workers import Worker, check_identity_count
from generator.corpus.writers import WriterError, WriterPool, default_writer_processes
from thermvision_db.io.atomic import atomic_write_json
from thermvision_db.schema.generated_corpus import IDENTITY_FILE, PARTIAL_PREFIX, RUN_FILE, RUN_SCHEMA, SUMMARY_FILE
from thermvision_db.schema.generated_corpus import CorpusError, GeneratedCorpus, file_lock, identity_name, identity_record
from thermvision_db.schema.splits import synthetic_split


class DiskFullError(CorpusError):
    """The disk filled up (or would): finished identities are kept, the run resumes after space is freed."""


# ------------------------------------------------------------------------------------------------ pipeline
class GenerationPipeline:
    """Makes identities into one output folder; see the module docstring for the guarantees."""

    def __init__(self, settings: GenerationSettings, output_dir: str | os.PathLike, *, device: str | None = None,
                 progress: bool = True, embed=None, barrier_timeout: float = DEFAULT_TIMEOUT_MINUTES * 60,
                 stills_generator=None, animator=None, writers: int | None = None, fingerprint: str | None = None):
        """`stills_generator` / `animator` replace the models the settings would load (benchmarks, custom models);
        `barrier_timeout` (seconds) bounds a wait for other workers' stills or identities; `writers`: PNG/H.264
        writer processes (default: from the cores; 0 writes inline, in this process); `fingerprint`: the settings'
        fingerprint when the caller has it already (it stats every weight file)."""
        self.settings = settings
        self.corpus = GeneratedCorpus(output_dir)
        self.fingerprint = fingerprint or settings.fingerprint()  # stats every weight file: once, not per identity
        self.root = self.corpus.root
        self.requested_device = device
        self.progress = progress
        self.embed = embed
        self.barrier_timeout = barrier_timeout
        self._stills = stills_generator
        self._animator = animator
        self._annotators = None
        self._weights: list[dict] | None = None
        self.claims = Claims(self.root)
        self.worker = Worker()
        self.writers = default_writer_processes() if writers is None else int(writers)
        self._pool: WriterPool | None = None
        self._motion_plan: MotionPlan | None = None

    # -- public
    def run(self, num_identities: int, shard: str | None = None, worker: Worker | None = None) -> RunSummary:
        """Generate identities 0..num_identities-1 (what this worker owns and is not finished yet).

        Other processes writing into the same folder share the work through per-unit claims (`claims.py`).
        """
        num_identities = check_identity_count(num_identities)
        try:
            return self._run(num_identities, worker or Worker.from_env(shard))
        except OSError as err:  # a full disk before or between identities (stills, run.json, manifest)
            if err.errno == errno.ENOSPC:
                raise DiskFullError(self._disk_full_message(err)) from err
            raise

    def _run(self, num_identities: int, worker: Worker) -> RunSummary:
        self.worker = worker
        self.device = worker.device(self.requested_device)
        summary = RunSummary(worker, int(num_identities), output_dir=str(self.root))
        start = time.perf_counter()
        self.prepare_folder()
        announce(self.root, worker.index, worker.count)
        self.claims.name_damaged(self.corpus)
        finished = self.corpus.finished()
        if len(finished) < num_identities and MotionPlan.reads_files(self.settings):
            self.motion_plan().check_files()  # before any still: a bad motion file stops the run at once
        if self.settings.distinct is None:
            slots = list(range(num_identities))
            mine = [i for i in slots if worker.owns(self._block(i))]
            todo = [i for i in mine if i not in finished]
            self._make_stills(todo, summary)
        else:
            slots = self._distinct_slots(num_identities, worker, summary)
            mine = [i for i in range(num_identities) if worker.owns(i)]
            todo = [i for i in mine if i not in finished]
        summary.skipped = len(mine) - len(todo)
        if todo:
            self._check_free_space(todo)
        done = self.corpus.is_finished
        with WriterPool(self.writers if todo else 0) as self._pool:
            pending: list[tuple[PendingIdentity, object]] = []  # animated, files still being written; claim held
            try:
                def finish_pending():
                    while pending:
                        self._finish(pending.pop(0), summary)

                for index, claim in tqdm(self.claims.each_held(todo, identity_name, done, finish_pending),
                                         total=len(todo), desc="identities", unit="identity",
                                         disable=not self.progress):
                    started = self._attempt(identity_name(index), summary, self.start_identity, index, slots[index],
                                            summary)
                    if started:
                        pending.append((started, claim))
                    else:
                        claim.close()
                    while pending and (len(pending) > 2 or pending[0][0].done()):
                        self._finish(pending.pop(0), summary)
                finish_pending()
            finally:
                for left, claim in pending:  # interrupted: nothing half-written stays behind
                    left.abort()
                    claim.close()
            summary.writer_cpu_seconds = self._pool.cpu_seconds
        self._pool = None
        self.corpus.write_manifest()
        summary.wall_seconds = time.perf_counter() - start
        name = SUMMARY_FILE if worker.count == 1 else f"summary.{worker.index}-of-{worker.count}.json"
        atomic_write_json(self.root / name, summary.to_dict())
        return summary

    def _finish(self, pending_claim: tuple, summary: RunSummary) -> None:
        """Finish an identity, then release its claim (another process may take it only once it is done)."""
        pending, claim = pending_claim
        try:
            self._attempt(pending.name, summary, self.finish_identity, pending, summary)
        finally:
            claim.close()

    def _attempt(self, name: str, summary: RunSummary, step, *args):
        """Run one identity's step; a failure is recorded and the run goes on, a full disk stops it."""
        try:
            result = step(*args)
        except Exception as err:  # one bad identity must not stop a thousand-identity run; a full disk does
            if isinstance(err, DiskFullError):
                raise
            if isinstance(err, (OSError, WriterError)) and err.errno == errno.ENOSPC:
                raise DiskFullError(self._disk_full_message(err)) from err
            summary.failures.append({"identity": name, "error": f"{type(err).__name__}: {err}"})
            logging.getLogger(__name__).exception("identity %s failed", name)
            return None
        return result

    def wait_for_identities(self, num_identities: int) -> None:
        """Block until identities 0..n-1 are all finished (other processes of a data-parallel run included).
        A single worker has waited for others' claims already (`Claims.each_held`): it fails at once instead."""
        if self.worker.count == 1:
            missing = sorted(set(range(num_identities)) - self.corpus.finished())
            if missing:
                raise CorpusError(f"{len(missing)} identities are not finished in {self.root} after this run "
                                  f"(first: {identity_name(missing[0])}); see the run's log for why")
            return
        by_slot = self.settings.distinct is not None  # with the filter, identity i belongs to worker i % count
        wait_for(lambda: sorted(set(range(num_identities)) - self.corpus.finished()), root=self.root,
                 what="identities", timeout=self.barrier_timeout, name=identity_name, count=self.worker.count,
                 owner=lambda i: (i if by_slot else self._block(i)) % self.worker.count)

    # -- folder and settings
    def prepare_folder(self) -> None:
        """Create the folder (clear error when it cannot be written) and pin the settings in run.json."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            if err.errno == errno.ENOSPC:
                raise DiskFullError(f"the disk holding {self.root} is full: {err}") from err
            raise CorpusError(f"cannot write the generated corpus to {self.root}: {err.strerror or err} "
                              "(choose another output_dir / --out)") from err
        wanted = {"schema": RUN_SCHEMA, "fingerprint": self.fingerprint, "settings": self.settings.to_dict()}
        with file_lock(self.root / ".lock"):
            existing = self.corpus.run_settings()
            if existing is None:
                atomic_write_json(self.root / RUN_FILE, wanted)
            elif existing.get("fingerprint") != wanted["fingerprint"]:
                old = existing.get("settings", {})
                changed = sorted(k for k in set(old) | set(wanted["settings"]) if old.get(k) != wanted["settings"].get(k))
                raise CorpusError(
                    f"{self.root} holds a corpus generated with other settings (changed: {', '.join(changed) or 'weight files'}); "
                    "use another output folder, or the same settings to resume it")

    # -- stills
    def _block(self, slot: int) -> int:
        return slot // self.settings.still_batch

    def _stills_generator(self):
        if self._stills is None:
            self._stills = load_stills_generator(self.settings, self.device)
        return self._stills

    def _make_stills(self, slots: list[int], summary: RunSummary) -> None:
        """Stills for these slots, made block by block (whole blocks, so batches never depend on what is left)."""
        from generator.stills.files import save_still, still_exists

        stills_dir = self.corpus.stills_dir
        wanted = {s for s in slots if not still_exists(stills_dir, s)}
        blocks = sorted({self._block(s) for s in wanted})
        if not blocks:
            return
        b = self.settings.still_batch  # the bar counts stills kept; a block is sampled whole (batches never change)
        bar = tqdm(total=len(wanted), desc=f"stills (sampled in blocks of {b})", unit="still", disable=not self.progress)
        done = lambda blk: all(still_exists(stills_dir, s) for s in range(blk * b, (blk + 1) * b)  # noqa: E731
                               if s in wanted)
        for block in self.claims.each(blocks, lambda blk: f"stills-{blk}", done):
            members = list(range(block * b, (block + 1) * b))
            t0 = time.perf_counter()
            generator = self._stills_generator()
            stills = generator.generate_batch(generator.identities(members, self.settings.seed))
            summary.stage_seconds["stills"] += time.perf_counter() - t0
            for still in stills:  # the whole block is sampled (same batch every time); only the asked-for kept
                if still.index in wanted and not still_exists(stills_dir, still.index):
                    save_still(still, stills_dir)
            bar.update(sum(m in wanted for m in members))
        bar.close()

    def _distinct_slots(self, needed: int, worker: Worker, summary: RunSummary) -> list[int]:
        """Candidate stills for all workers' blocks, a file barrier, then the same decisions in every process."""
        from generator.corpus.distinct import pixel_embedding, select_distinct
        from generator.stills.files import load_still, still_exists, still_filename

        embed = self.embed or pixel_embedding
        candidates = needed
        while True:
            blocks = range(self._block(candidates - 1) + 1)
            mine = [s for blk in blocks if worker.owns(blk) for s in range(blk * self.settings.still_batch,
                                                                          (blk + 1) * self.settings.still_batch)]
            self._make_stills(mine, summary)
            wait_for(lambda: [s for s in range(candidates) if not still_exists(self.corpus.stills_dir, s)],
                     root=self.root, what="stills", timeout=self.barrier_timeout,
                     name=lambda s: still_filename(s, ".png"), owner=lambda s: self._block(s) % worker.count,
                     count=worker.count)
            images = [load_still(self.corpus.stills_dir / still_filename(s, ".png")).image for s in range(candidates)]
            accepted, decisions = select_distinct(embed(images), self.settings.distinct, needed)
            if len(accepted) >= needed:
                atomic_write_json(self.root / "filter.json", {"threshold": self.settings.distinct,
                                                              "candidates": candidates, "decisions": decisions})
                return accepted
            if candidates >= 20 * needed:
                raise CorpusError(f"the distinctness filter accepted only {len(accepted)} of {candidates} candidate "
                                  f"stills (threshold {self.settings.distinct}): raise the threshold")
            candidates += max(needed - len(accepted), self.settings.still_batch)

    # -- animation and labels
    def animator(self):
        """The LivePortrait animator, loaded once per run."""
        if self._animator is None:
            self._animator = load_animator(self.settings, self.device)
        return self._animator

    def label_models(self):
        """(detector, landmarker, eye-lip model) of the settings, each None when not given; loaded once."""
        if self._annotators is None:
            self._annotators = load_annotators(self.settings)
        return self._annotators

    def motion_plan(self) -> MotionPlan:
        """Each identity's driving motion (programs, clips, library), built on first use."""
        if self._motion_plan is None:
            self._motion_plan = MotionPlan(self.settings, self.animator())
        return self._motion_plan

    @property
    def writer_pool(self) -> WriterPool:
        """The PNG/H.264 writer processes of the running `run` (or an inline pool while one identity is made)."""
        assert self._pool is not None, "identities are written inside GenerationPipeline.run"
        return self._pool

    def _weight_records(self, still_sidecar: dict) -> list[dict]:
        if self._weights is None:
            self._weights = weight_records(self.settings, self.animator().nets)
        return list(still_sidecar.get("weights", [])) + self._weights

    def _check_free_space(self, todo: list[int]) -> None:
        """Refuse to start when the estimated output clearly does not fit (PNG frames dominate)."""
        size = self.animator().cfg.output_size
        frames = sum(self.settings.motion.values())
        per_identity = frames * size * size * (0.45 if self.settings.frames == "png" else 0.05) + 4 * size * size
        need = per_identity * len(todo)
        free = shutil.disk_usage(self.root).free
        if free < need:
            raise DiskFullError(f"{self.root} has {free / 2**30:.2f} GiB free; {len(todo)} identities need about "
                                f"{need / 2**30:.2f} GiB: free space, or pass fewer identities / another folder")

    def _disk_full_message(self, err: OSError) -> str:
        done = len(self.corpus.finished())
        return (f"the disk holding {self.root} is full ({err.filename or ''}): {done} finished identities are kept; "
                "free space and run again to resume")

    def make_identity(self, index: int, slot: int, summary: RunSummary) -> Path:
        """Animate and label one identity into a temporary folder, then rename it into place."""
        own_pool = self._pool is None
        if own_pool:
            self._pool = WriterPool(0)
        try:
            return self.finish_identity(self.start_identity(index, slot, summary), summary)
        finally:
            if own_pool:
                self._pool = None

    def start_identity(self, index: int, slot: int, summary: RunSummary) -> PendingIdentity:
        """Animate and label one identity into a temporary folder; its files are left to the writer pool."""
        from generator.annotate.labels import label_still
        from generator.stills.files import load_still, still_filename

        name = identity_name(index)
        final = self.corpus.identity_dir(name)
        partial = self.corpus.identities_dir / f"{PARTIAL_PREFIX}{name}"
        if partial.exists():
            shutil.rmtree(partial)  # left by a killed run: redo the identity from scratch
        partial.mkdir(parents=True)
        jobs: list = []  # the videos handed to the writer pool
        try:
            still_png = self.corpus.stills_dir / still_filename(slot, ".png")
            still = load_still(still_png)
            shutil.copyfile(still_png, partial / "still.png")
            shutil.copyfile(still_png.with_suffix(".json"), partial / "still.json")
            image = np.asarray(still.image)
            t0 = time.perf_counter()
            detector, landmarker, eye_lip = self.label_models()
            still_labels = label_still(image, detector=detector, landmarker=landmarker)
            options = self._animation_options(image, still_labels, eye_lip)
            summary.stage_seconds["labels"] += time.perf_counter() - t0
            animator = self.animator()
            t0 = time.perf_counter()
            source = animator.prepare_source(image)
            summary.stage_seconds["animate"] += time.perf_counter() - t0
            videos = [write_video(self, name, set_name, frames, source, still_labels, options, partial, summary, jobs,
                                  index=index)
                      for set_name, frames in self.settings.motion.items()]
            programs = {v["set"]: v.pop("motion_program") for v in videos}  # kept in the motion record only
            record = identity_record(
                identity=name, index=index, slot=slot, split=synthetic_split(index),
                gender=still.attributes["gender"], attributes=still.attributes, seed=still.seed,
                run_seed=still.run_seed, prompt=still.prompt, still="still.png",
                weights=self._weight_records(still.sidecar), sampler=still.sidecar.get("sampler"),
                motion={"program": self.settings.motion, "kind": self.settings.motion_program, "sets": programs,
                        "driving_option": self.settings.driving_option, "stitching": self.settings.stitching,
                        "chunk_size": self.settings.chunk_size},
                labels={"method": "propagated", "still_labels": still_labels.source, "detector": bool(detector),
                        "landmarker": bool(landmarker), "source_eye_ratio": list(options.source_eye_ratio),
                        "source_lip_ratio": options.source_lip_ratio, "eye_lip_measured": eye_lip is not None},
                settings_fingerprint=self.fingerprint, videos=videos)
            return PendingIdentity(name, partial, final, record, jobs)
        except BaseException:
            for job in jobs:
                job.abort()
            shutil.rmtree(partial, ignore_errors=True)
            raise

    def finish_identity(self, pending: PendingIdentity, summary: RunSummary) -> Path:
        """Wait for the identity's writers, write its record last, and rename the folder into place."""
        try:
            t0 = time.perf_counter()
            for job, video in zip(pending.jobs, pending.record["videos"]):
                video["encoder"] = job.result()["codec"]  # NVENC may have fallen back to x264 for this video
            summary.stage_seconds["encode"] += time.perf_counter() - t0
            atomic_write_json(pending.partial / IDENTITY_FILE, pending.record)
            if not move_into_place(self.corpus, pending.partial, pending.final):
                return pending.final  # finished meanwhile by another process: theirs is kept
        except BaseException:
            pending.abort()
            raise
        summary.generated.append(pending.name)
        return pending.final

    def _animation_options(self, image: np.ndarray, still_labels, eye_lip):
        """Upstream flags, plus the still's measured eye/lip opening when a 203-point model is given (the
        expression retargeting starts from the source's real opening instead of a neutral default)."""
        from generator.animate.liveportrait import AnimationOptions

        options = AnimationOptions(driving_option=self.settings.driving_option, stitching=self.settings.stitching)
        if eye_lip is not None:
            left, right, lip = eye_lip.eye_lip_ratios(eye_lip(image, still_labels.box_xywh))
            options.source_eye_ratio, options.source_lip_ratio = (left, right), lip
        return options

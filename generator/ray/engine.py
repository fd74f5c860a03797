"""The driver of `--engine ray`: the single-process pipeline's steps, with the heavy work on Ray actors.

    summary = generate_on_ray(GenerationSettings(preset="tiny"), "out/", 500)         # a local Ray instance
    summary = generate_on_ray(settings, "/shared/corpus", 10_000, RayOptions(address="auto"))  # a cluster

Steps, as in `GenerationPipeline.run`: the folder and its settings (run.json; a resumed folder keeps its finished
identities), the stills on `StillsWorker` actors (whole blocks, so batches never depend on the layout), the
optional distinctness filter as one global step in the driver, then every unfinished identity on
`IdentityWorker` actors, the manifest and the summary. Stills actors are released before the identity actors
start, so one GPU holds FLUX or LivePortrait, not both. The corpus equals the single-process one file for file.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from tqdm.auto import tqdm

from generator.corpus.motion_plan import MotionPlan
from generator.corpus.pipeline import GenerationPipeline
from generator.corpus.settings import GenerationSettings
from generator.corpus.workers import Worker
from generator.ray.errors import RayEngineError
from generator.ray.scheduler import run_pool
from generator.ray.storage import check_every_node, remove_token, write_token
from generator.ray.summary import RaySummary
from thermvision_db.io.atomic import atomic_write_json
from thermvision_db.schema.generated_corpus import SUMMARY_FILE, identity_name


@dataclass
class RayOptions:
    """Where and how big: `address` None = $RAY_ADDRESS or a local instance started and stopped here."""

    address: str | None = None
    workers: int | None = None  # actors per stage (default: the cluster's GPUs / gpus_per_worker, else 1)
    gpus_per_worker: float | None = None  # default: 1 when the cluster has GPUs, else 0
    cpus_per_worker: float = 1.0  # plus one per writer process of an identity actor
    writers: int = 1  # PNG/H.264 writer processes per identity actor (0: written inline in the actor)
    max_retries: int = 2  # retries of one still block / identity before it is reported failed
    stall_timeout: float = 1800.0  # seconds without any finished item before the run stops


def connect(address: str | None) -> bool:
    """Connect to `address` / $RAY_ADDRESS, or start a local instance; True when this call started Ray."""
    try:
        import ray
    except ImportError:
        raise RayEngineError("--engine ray needs Ray: pip install 'thermvision-db[ray]'") from None
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or "local"
    ray.init(address=target, include_dashboard=False if target == "local" else None, log_to_driver=False)
    return True


class _Driver(GenerationPipeline):
    """The pipeline's folder, resume and filter logic; stills are sent to Ray instead of made here."""

    def __init__(self, settings, output_dir, options: RayOptions, device, progress, embed, fingerprint):
        super().__init__(settings, output_dir, device=device, progress=progress, embed=embed, writers=0,
                         fingerprint=fingerprint)
        self.options = options
        self.stills_actors: list = []

    def actor_args(self, token: str) -> dict:
        import torch

        cpu = not self.gpus and (self.requested_device or "cpu").startswith("cpu")
        return {"settings": self.settings.to_dict(), "root": str(self.root), "token": token,
                "device": ("cuda" if self.gpus else self.requested_device or "cpu"),
                "threads": torch.get_num_threads() if cpu else None}

    def _make_stills(self, slots: list[int], summary: RaySummary) -> None:
        from generator.ray.workers import StillsWorker
        from generator.stills.files import still_exists

        wanted = {s for s in slots if not still_exists(self.corpus.stills_dir, s)}
        blocks = sorted({self._block(s) for s in wanted})
        if not blocks:
            return
        import ray

        if not self.stills_actors:
            actor = ray.remote(StillsWorker).options(num_gpus=self.gpus, num_cpus=self.options.cpus_per_worker,
                                                     max_restarts=-1)
            self.stills_actors = [actor.remote(**self.args) for _ in range(self.count)]
        b = self.settings.still_batch
        bar = tqdm(total=len(blocks) * b, desc="stills", unit="still", disable=not self.progress)

        def done(block, value):
            summary.stage_seconds["stills"] += value["seconds"]
            bar.update(b)

        outcome = run_pool(self.stills_actors, blocks, lambda actor, blk: actor.make_block.remote(
            blk, sorted(s for s in wanted if self._block(s) == blk)), max_retries=self.options.max_retries,
            stall_timeout=self.options.stall_timeout, on_result=done, what="still blocks")
        bar.close()
        summary.retries += [{**r, "item": f"stills-{r['item']}"} for r in outcome.retries]
        for failure in outcome.failures:  # the identities of a failed block fail with it (no still, no identity)
            for s in range(failure["item"] * b, (failure["item"] + 1) * b):
                if s in wanted:
                    summary.failures.append({"identity": f"still {s}", "attempts": failure["attempts"],
                                             "error": failure["error"]})

    def release_stills(self) -> None:
        import ray

        for actor in self.stills_actors:
            ray.kill(actor, no_restart=True)
        self.stills_actors = []


def _layout(options: RayOptions) -> tuple[float, int]:
    import ray

    cluster_gpus = ray.cluster_resources().get("GPU", 0)
    gpus = options.gpus_per_worker if options.gpus_per_worker is not None else (1 if cluster_gpus else 0)
    if gpus > cluster_gpus:
        raise RayEngineError(f"each worker asks for {gpus} GPU(s) but the Ray cluster has {cluster_gpus:g}")
    count = options.workers or (max(1, int(cluster_gpus // gpus)) if gpus else 1)
    return gpus, count


def generate_on_ray(settings: GenerationSettings, output_dir, num_identities: int, options: RayOptions | None = None,
                    *, device: str | None = None, progress: bool = True, embed=None,
                    fingerprint: str | None = None, identity_worker=None) -> RaySummary:
    """Make identities 0..num_identities-1 of `output_dir` with Ray; see the module docstring.
    `identity_worker`: a subclass of `IdentityWorker` (benchmarks, custom models)."""
    from thermvision_db.errors import InputError

    if int(num_identities) < 1:
        raise InputError(f"num_identities must be >= 1, got {num_identities}")
    options = options or RayOptions()
    started = connect(options.address)
    try:
        return _run(settings, output_dir, int(num_identities), options, device, progress, embed, fingerprint,
                    identity_worker)
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(settings, output_dir, num_identities, options, device, progress, embed, fingerprint,
         identity_worker) -> RaySummary:
    import ray

    from generator.ray.workers import IdentityWorker

    start = time.perf_counter()
    driver = _Driver(settings, output_dir, options, device, progress, embed, fingerprint)
    driver.gpus, driver.count = _layout(options)
    summary = RaySummary(Worker(), num_identities, output_dir=str(driver.root),
                         nodes=sum(1 for n in ray.nodes() if n.get("Alive")),
                         actors={"per_stage": driver.count, "gpus": driver.gpus, "writers": options.writers})
    driver.prepare_folder()
    MotionPlan.check_templates(settings)  # before any still; the actors check videos and keypoints with the model
    token = write_token(driver.root)
    try:
        check_every_node(driver.root, token)
        driver.args = driver.actor_args(token)
        finished = driver.corpus.finished()
        if settings.distinct is None:
            slots = list(range(num_identities))
            todo = [i for i in slots if i not in finished]
            driver._make_stills(todo, summary)
        else:  # the global step: every candidate still, then the same decisions as a single process
            slots = driver._distinct_slots(num_identities, Worker(), summary)
            todo = [i for i in range(num_identities) if i not in finished]
        driver.release_stills()
        failed_stills = {f["identity"] for f in summary.failures}
        todo = [i for i in todo if f"still {slots[i]}" not in failed_stills]
        summary.skipped = num_identities - len(todo) - len(failed_stills)
        if todo:
            _make_identities(driver, todo, slots, token, options, summary, identity_worker or IdentityWorker)
    finally:
        remove_token(driver.root, token)
    driver.corpus.write_manifest()
    summary.wall_seconds = time.perf_counter() - start
    atomic_write_json(driver.root / SUMMARY_FILE, summary.to_dict())
    return summary


def _make_identities(driver, todo, slots, token, options, summary, worker_class) -> None:
    import ray

    actor = ray.remote(worker_class)
    resources = dict(num_gpus=driver.gpus, max_restarts=-1, num_cpus=options.cpus_per_worker + options.writers)
    actors = [actor.options(name=f"thermvision-identity-{k}-{token}", **resources).remote(  # named: ray list actors
        **driver.args, fingerprint=driver.fingerprint, writers=options.writers) for k in range(driver.count)]
    bar = tqdm(total=len(todo), desc="identities", unit="identity", disable=not driver.progress)

    def done(index, value):
        for stage, seconds in value["stage_seconds"].items():
            summary.stage_seconds[stage] += seconds
        summary.writer_cpu_seconds += value["writer_cpu_seconds"]
        summary.generated.append(identity_name(index))
        bar.update(1)

    def retry(index, error):
        bar.set_postfix(retried=len(summary.retries) + 1)

    try:
        outcome = run_pool(actors, todo, lambda a, i: a.make.remote(i, slots[i]), max_retries=options.max_retries,
                           stall_timeout=options.stall_timeout, on_result=done, on_retry=retry, what="identities")
    finally:
        bar.close()
        for a in actors:
            ray.kill(a, no_restart=True)
    summary.generated.sort()
    summary.retries += [{**r, "item": identity_name(r["item"])} for r in outcome.retries]
    summary.failures += [{"identity": identity_name(f["item"]), "attempts": f["attempts"], "error": f["error"]}
                         for f in outcome.failures]

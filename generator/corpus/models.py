"""The models one corpus run loads, from its settings: stills generator, animator, annotators, weight records.

Each is loaded lazily by the pipeline (a run that only resumes labels never loads FLUX) and once per process.
"""

from __future__ import annotations

from generator.corpus.settings import GenerationSettings


def load_stills_generator(s: GenerationSettings, device):
    """The FLUX (or tiny) stills generator the settings describe."""
    from generator.stills.flux import quiet_libraries
    from generator.stills.generate import StillsGenerator

    quiet_libraries()
    return StillsGenerator.from_preset(
        s.preset, device=device, dtype=s.dtype, flux=s.flux, flux_base=s.flux_base, lora=s.lora,
        lora_scale=s.lora_scale, lora_allow_ignored_keys=s.lora_allow_ignored_keys, template=s.prompt_template,
        template_t5=s.prompt_template_t5, height=s.still_size, width=s.still_size, num_steps=s.still_steps,
        noise=s.still_noise)


def load_animator(s: GenerationSettings, device):
    """LivePortrait from `liveportrait_dir`, or the tiny random networks (seed 0) without it."""
    import torch

    from generator.animate.liveportrait import LivePortraitConfig, LivePortraitNetworks, LivePortraitPipeline

    if s.liveportrait_dir:
        nets = LivePortraitNetworks.from_pretrained(s.liveportrait_dir)
    else:
        from generator.animate.liveportrait.networks.motion_extractor import make_near_frontal_

        nets = LivePortraitNetworks.from_config(LivePortraitConfig.tiny(), seed=0)
        make_near_frontal_(nets.motion_extractor)  # positive scale, near-frontal: the labels look like faces
        with torch.no_grad():  # random stitching / eye / lip nets would add random keypoint offsets: start them at 0
            for net in (nets.stitching_retargeting_module.stitching, nets.stitching_retargeting_module.lip,
                        nets.stitching_retargeting_module.eye):
                net.mlp[-1].weight.mul_(0.02)
                net.mlp[-1].bias.zero_()
    # the corpus stores white-hot grayscale frames (channels replicated), so it asks for them explicitly
    return LivePortraitPipeline(nets, device=device, dtype=s.dtype, chunk_size=s.chunk_size, progress=False,
                                grayscale_output=True)


def load_annotators(s: GenerationSettings) -> tuple:
    """(detector, 54-point landmarker, 203-point eye/lip model); None where the settings give no model."""
    from generator.annotate.models import load_detector, load_landmarker
    from generator.annotate.onnx_models import Landmarker203

    # .onnx, or SF-TL54's dlib .svm / .dat (with the authors' settings)
    return (load_detector(s.label_detector) if s.label_detector else None,
            load_landmarker(s.label_landmarker) if s.label_landmarker else None,
            Landmarker203(s.eye_lip_model) if s.eye_lip_model else None)


def weight_records(s: GenerationSettings, animator_nets) -> list[dict]:
    """sha256 of every weight file the animation and labels used (the stills record their own)."""
    from generator.weights import hash_weights, state_dict_sha256

    records = []
    for role, path in (("liveportrait", s.liveportrait_dir), ("label_detector", s.label_detector),
                       ("label_landmarker", s.label_landmarker)):
        if path:
            records += [{"role": role, "path": str(p), "sha256": sha, **_label_settings(role, p)}
                        for p, sha in hash_weights(path).items()]
    if not s.liveportrait_dir:
        records.append({"role": "liveportrait", "path": None, "source": "tiny random networks, seed 0",
                        "sha256": state_dict_sha256(animator_nets)})
    return records


def _label_settings(role: str, path) -> dict:
    """dlib label models: their kind and the settings they run with (the authors' width 300, one upsampling)."""
    from generator.annotate.dlib_models import dlib_defaults

    return dlib_defaults(role, path)

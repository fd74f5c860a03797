"""Single-file FLUX checkpoints (BFL, ComfyUI-prefixed, fp8) through the thermvision preset, offline.

The tiny transformer is written in BFL's original key layout by `to_bfl` below, an independent second
implementation of the key mapping (written from BFL's module names, not from the project's tables), and read
back through the project's loader. diffusers' own converter is checked against the project's on a tensor set
it accepts (it hard-codes FLUX.1's 3072 width for single blocks' fused linear1).
"""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from generator.stills.single_file import FluxCheckpointError, bfl_to_diffusers, load_flux_transformer
from generator.stills.sampler import SamplerSettings
from generator.stills.generate import StillsGenerator
from generator.stills.flux import build_pipeline
from generator.stills.tiny_flux import build_tiny_flux
from generator.weights import WeightsNotFoundError

SMALL = dict(height=32, width=32, num_steps=4, cfg_start_step=1)


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def to_bfl(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """diffusers FluxTransformer2DModel state dict -> BFL `flux` module layout (flux1-dev.safetensors keys).

    Fuses q|k|v (double blocks) and q|k|v|mlp (single blocks' linear1) along the output rows, and writes
    norm_out's modulation as BFL's shift|scale (diffusers stores scale|shift).
    """
    out: dict[str, torch.Tensor] = {}
    n_double = len({k.split(".")[1] for k in sd if k.startswith("transformer_blocks.")})
    n_single = len({k.split(".")[1] for k in sd if k.startswith("single_transformer_blocks.")})
    embedders = {"time_in": "timestep_embedder", "vector_in": "text_embedder", "guidance_in": "guidance_embedder"}
    for p in ("weight", "bias"):
        out[f"img_in.{p}"] = sd[f"x_embedder.{p}"]
        out[f"txt_in.{p}"] = sd[f"context_embedder.{p}"]
        for bfl, ours in embedders.items():
            out[f"{bfl}.in_layer.{p}"] = sd[f"time_text_embed.{ours}.linear_1.{p}"]
            out[f"{bfl}.out_layer.{p}"] = sd[f"time_text_embed.{ours}.linear_2.{p}"]
        out[f"final_layer.linear.{p}"] = sd[f"proj_out.{p}"]
        scale, shift = sd[f"norm_out.linear.{p}"].chunk(2)
        out[f"final_layer.adaLN_modulation.1.{p}"] = torch.cat([shift, scale])
        for i in range(n_double):
            b, d = f"transformer_blocks.{i}", f"double_blocks.{i}"
            out[f"{d}.img_mod.lin.{p}"] = sd[f"{b}.norm1.linear.{p}"]
            out[f"{d}.txt_mod.lin.{p}"] = sd[f"{b}.norm1_context.linear.{p}"]
            out[f"{d}.img_attn.qkv.{p}"] = torch.cat([sd[f"{b}.attn.to_{x}.{p}"] for x in "qkv"])
            out[f"{d}.txt_attn.qkv.{p}"] = torch.cat([sd[f"{b}.attn.add_{x}_proj.{p}"] for x in "qkv"])
            out[f"{d}.img_attn.proj.{p}"] = sd[f"{b}.attn.to_out.0.{p}"]
            out[f"{d}.txt_attn.proj.{p}"] = sd[f"{b}.attn.to_add_out.{p}"]
            for stream, ff in (("img", "ff"), ("txt", "ff_context")):
                out[f"{d}.{stream}_mlp.0.{p}"] = sd[f"{b}.{ff}.net.0.proj.{p}"]
                out[f"{d}.{stream}_mlp.2.{p}"] = sd[f"{b}.{ff}.net.2.{p}"]
        for i in range(n_single):
            b, s = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
            out[f"{s}.linear1.{p}"] = torch.cat([sd[f"{b}.attn.to_{x}.{p}"] for x in "qkv"] + [sd[f"{b}.proj_mlp.{p}"]])
            out[f"{s}.linear2.{p}"] = sd[f"{b}.proj_out.{p}"]
            out[f"{s}.modulation.lin.{p}"] = sd[f"{b}.norm.linear.{p}"]
    for i in range(n_double):
        b, d = f"transformer_blocks.{i}", f"double_blocks.{i}"
        for stream, q, k in (("img", "norm_q", "norm_k"), ("txt", "norm_added_q", "norm_added_k")):
            out[f"{d}.{stream}_attn.norm.query_norm.scale"] = sd[f"{b}.attn.{q}.weight"]
            out[f"{d}.{stream}_attn.norm.key_norm.scale"] = sd[f"{b}.attn.{k}.weight"]
    for i in range(n_single):
        b, s = f"single_transformer_blocks.{i}", f"single_blocks.{i}"
        out[f"{s}.norm.query_norm.scale"] = sd[f"{b}.attn.norm_q.weight"]
        out[f"{s}.norm.key_norm.scale"] = sd[f"{b}.attn.norm_k.weight"]
    assert len(out) == len(sd) - 8 * n_double - 6 * n_single  # fusing: 12 -> 4 tensors per double, 8 -> 2 per single
    return out


def stills(flux, flux_base=None, dtype=torch.float32) -> tuple[list[np.ndarray], torch.nn.Module]:
    """Images of identities 0 and 1 (batch 2) from the thermvision preset's loader, without a LoRA."""
    pipe, _ = build_pipeline("thermvision", dtype, flux=flux, flux_base=flux_base)
    gen = StillsGenerator(pipe, sampler=SamplerSettings(**SMALL), device=torch.device("cpu"))
    images = [np.asarray(s.image, dtype=np.int16) for s in gen.generate([0, 1], batch_size=2, progress=False)]
    return images, pipe.transformer


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(diffusers folder of a tiny pipeline, its transformer's state dict, the same transformer as a BFL file)."""
    root = tmp_path_factory.mktemp("flux_single")
    pipe = build_tiny_flux(seed=0, num_layers=2, num_single_layers=2)  # two of each: block indices matter
    pipe.save_pretrained(root / "base")
    sd = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    save_file(to_bfl(sd), str(root / "flux1-dev-tiny.safetensors"))
    return root / "base", sd, root / "flux1-dev-tiny.safetensors"


@pytest.fixture(scope="module")
def folder_images(tiny):
    return stills(tiny[0])[0]


def assert_same_weights(model, sd, cast=None):
    loaded = model.state_dict()
    assert loaded.keys() == sd.keys()
    for key, tensor in sd.items():
        expected = tensor if cast is None else cast(key, tensor)
        assert torch.equal(loaded[key], expected), key


def test_bfl_single_file_loads_the_same_weights_and_images(tiny, folder_images):
    base, sd, single = tiny
    images, transformer = stills(single, flux_base=base)
    assert_same_weights(transformer, sd)
    assert all((a == b).all() for a, b in zip(images, folder_images))


def test_project_converter_inverts_the_independent_mapping(tiny):
    _, sd, _ = tiny
    back = bfl_to_diffusers(to_bfl(sd))
    assert back.keys() == sd.keys()
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_project_converter_matches_diffusers_on_shapes_diffusers_accepts(tiny):
    """diffusers splits linear1 as (3072, 3072, 3072, 12288) rows whatever the model; give it those rows (the
    column count does not matter to a row split) and both converters must agree on every key and value."""
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    _, sd, _ = tiny
    bfl = to_bfl(sd)
    g = torch.Generator().manual_seed(0)
    for i in (0, 1):
        bfl[f"single_blocks.{i}.linear1.weight"] = torch.randn(7 * 3072, 3, generator=g)
        bfl[f"single_blocks.{i}.linear1.bias"] = torch.randn(7 * 3072, generator=g)
    ours = bfl_to_diffusers(bfl, inner_dim=3072)
    theirs = convert_flux_transformer_checkpoint_to_diffusers({f"model.diffusion_model.{k}": v for k, v in bfl.items()})
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_full_size_flux_dev_layout_converts_to_the_model_keys_and_shapes():
    """FLUX.1-dev's real layout (19 double, 38 single blocks, width 3072) on the meta device: no memory used.
    Both converters must give exactly the keys and shapes of diffusers' default FluxTransformer2DModel."""
    from diffusers import FluxTransformer2DModel
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers

    with torch.device("meta"):
        model = FluxTransformer2DModel(guidance_embeds=True)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    bfl = to_bfl(model.state_dict())
    assert bfl["single_blocks.37.linear1.weight"].shape == (21504, 3072)
    ours = {k: tuple(v.shape) for k, v in bfl_to_diffusers(bfl).items()}
    theirs = {k: tuple(v.shape) for k, v in convert_flux_transformer_checkpoint_to_diffusers(dict(bfl)).items()}
    assert ours == expected == theirs


@pytest.mark.parametrize("prefix", ["model.diffusion_model.", "diffusion_model."])
def test_comfyui_all_in_one_file_loads_the_transformer_only(tiny, folder_images, tmp_path, prefix):
    base, sd, _ = tiny
    tensors = {f"{prefix}{k}": v for k, v in to_bfl(sd).items()}
    tensors["vae.decoder.conv_in.weight"] = torch.zeros(2, 2)  # other components of an all-in-one checkpoint
    tensors["text_encoders.clip_l.transformer.text_model.final_layer_norm.weight"] = torch.zeros(2)
    save_file(tensors, str(tmp_path / "flux1-dev-comfy.safetensors"))
    images, transformer = stills(tmp_path / "flux1-dev-comfy.safetensors", flux_base=base)
    assert_same_weights(transformer, sd)
    assert all((a == b).all() for a, b in zip(images, folder_images))


def test_fp8_single_file_is_upcast_on_cpu(tiny, folder_images, tmp_path):
    """Matrices in float8_e4m3fn, vectors in bf16, as in flux1-dev-fp8 files; loaded values are the fp8 values."""
    base, sd, _ = tiny

    def stored(key, t):
        return t.to(torch.float8_e4m3fn) if t.ndim == 2 else t.to(torch.bfloat16)

    bfl = {k: stored(k, v) for k, v in to_bfl(sd).items()}
    assert bfl["double_blocks.0.img_attn.qkv.weight"].dtype == torch.float8_e4m3fn
    save_file(bfl, str(tmp_path / "flux1-dev-fp8.safetensors"))
    images, transformer = stills(tmp_path / "flux1-dev-fp8.safetensors", flux_base=base)
    assert transformer.dtype == torch.float32
    assert_same_weights(transformer, sd, cast=lambda k, t: stored(k, t).to(torch.float32))
    diff = np.mean([np.abs(a - b).mean() for a, b in zip(images, folder_images)])
    assert 0 < diff < 8  # fp8 rounding moves the image a little, not into another picture


def test_thermvision_preset_with_single_file_and_lora_records_the_file(tiny, tmp_path):
    import hashlib

    from generator.stills.tiny_flux import write_tiny_kohya_lora

    base, _, single = tiny
    lora = write_tiny_kohya_lora(tmp_path / "thermal.safetensors")
    gen = StillsGenerator.from_preset("thermvision", device="cpu", flux=single, flux_base=base, lora=lora, **SMALL)
    weights = {w["path"]: w["sha256"] for w in gen.generate([0], progress=False)[0].sidecar["weights"]}
    assert weights[str(single.resolve())] == hashlib.sha256(single.read_bytes()).hexdigest()
    assert not any("/transformer/" in p for p in weights)  # the base folder's transformer is not used
    assert str(lora.resolve()) in weights


@pytest.mark.parametrize("content,match", [
    ({"conv_in.weight": torch.zeros(2, 2), "conv_in.bias": torch.zeros(2)},
     r"not_flux\.safetensors is not a FLUX transformer checkpoint: \d+ of \d+ expected keys are missing, "
     r"e\.g\. img_in\.weight.*conv_in\.bias"),
    ("diffusers", r"not_flux\.safetensors is not a FLUX transformer checkpoint.*diffusers' layout: pass the "
                  r"diffusers FLUX folder"),
    ("drop:guidance_in.in_layer.weight",
     r"not_flux\.safetensors does not match the FLUX transformer config: 1 of \d+ expected keys are missing, "
     r"e\.g\. guidance_in\.in_layer\.weight"),
    ("add:double_blocks.0.img_attn.qkv.scale_weight",
     r"not_flux\.safetensors has 1 keys.*double_blocks\.0\.img_attn\.qkv\.scale_weight.*scaled-fp8"),
    ("widen:img_in.weight", r"not_flux\.safetensors: img_in\.weight gives x_embedder\.weight of shape"),
])
def test_single_file_that_is_not_this_flux_transformer_is_refused(tiny, tmp_path, content, match):
    base, sd, _ = tiny
    if content == "diffusers":
        content = sd
    elif isinstance(content, str):
        op, key = content.split(":")
        tensors = to_bfl(sd)
        if op == "drop":
            del tensors[key]
        elif op == "add":
            tensors[key] = torch.ones(1)
        else:
            tensors[key] = torch.zeros(tensors[key].shape[0] + 1, tensors[key].shape[1])
        content = tensors
    save_file(content, str(tmp_path / "not_flux.safetensors"))
    with pytest.raises(FluxCheckpointError, match=match):
        load_flux_transformer(tmp_path / "not_flux.safetensors", base, torch.float32)


def test_single_file_without_flux_base_says_to_pass_it(tiny, tmp_path, monkeypatch):
    from huggingface_hub import constants

    base, _, single = tiny
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(WeightsNotFoundError, match=r"--flux-base.*flux1-dev-tiny\.safetensors holds only the "
                                                   r"transformer"):
        build_pipeline("thermvision", torch.float32, flux=single)
    with pytest.raises(WeightsNotFoundError, match=r"not a diffusers FLUX folder.*--flux-base"):
        build_pipeline("thermvision", torch.float32, flux=single, flux_base=tmp_path)


def test_comfy_fp8_lora_mode_patches_the_fp8_file_as_comfyui(tiny, tmp_path):
    """lora_mode='comfy-fp8': the transformer holds the fp8 tensors patched in fp32 and stochastically rounded
    with per-key seeds (CPU emulation of the CUDA draws), converted to diffusers' layout; the default fuse
    differs from it by at most the fp8 rounding."""
    from safetensors.torch import load_file

    from generator.stills.comfy_fp8_lora import patch_fp8_checkpoint
    from generator.stills.single_file import bfl_to_diffusers
    from generator.stills.tiny_flux import write_tiny_kohya_lora

    base, sd, _ = tiny
    bfl = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v.to(torch.bfloat16) for k, v in to_bfl(sd).items()}
    single = tmp_path / "flux1-dev-fp8.safetensors"
    save_file(bfl, str(single))
    lora = write_tiny_kohya_lora(tmp_path / "thermal.safetensors")
    comfy = StillsGenerator.from_preset("thermvision", device="cpu", flux=single, flux_base=base, lora=lora,
                                        lora_mode="comfy-fp8", **SMALL)
    expected = bfl_to_diffusers(patch_fp8_checkpoint(bfl, load_file(str(lora)), 0.9, device="emulate"))
    loaded = comfy.pipe.transformer.state_dict()
    for key, tensor in expected.items():
        assert torch.equal(loaded[key], tensor.to(torch.float32)), key
    unpatched = bfl_to_diffusers(bfl)
    patched = {k for k in expected if not torch.equal(expected[k].float(), unpatched[k].float())}
    assert any("attn.to_q" in k for k in patched)  # the LoRA did change weights
    still = comfy.generate([0], progress=False)[0]
    assert still.sidecar["lora"]["mode"] == "comfy-fp8"
    fused = StillsGenerator.from_preset("thermvision", device="cpu", flux=single, flux_base=base, lora=lora, **SMALL)
    fused_sd = fused.pipe.transformer.state_dict()
    for key in patched:  # fuse keeps W_fp8 + delta unrounded; comfy is one of its fp8 neighbours
        step = torch.maximum(fused_sd[key].abs() * 2 ** -3, torch.tensor(2.0 ** -9))
        assert ((loaded[key] - fused_sd[key]).abs() <= step + 1e-5).all(), key
    with pytest.raises(ValueError, match="single-file fp8"):
        StillsGenerator.from_preset("thermvision", device="cpu", flux=base, lora=lora, lora_mode="comfy-fp8", **SMALL)

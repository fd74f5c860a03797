"""The thermal LoRA path: kohya/FluxTrainer and ComfyUI key forms, strength, fusing, and clear refusals."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from generator.stills.lora import LoraError
from generator.stills.flux import SpeedOptions
from generator.stills.generate import StillsGenerator
from generator.stills.tiny_flux import TINY_INNER_DIM, write_tiny_kohya_lora
from generator.weights import UnsafeWeightsError, WeightsNotFoundError

SMALL = dict(height=32, width=32, num_steps=4, cfg_start_step=1)
INDICES = [0, 1]


pytestmark = pytest.mark.usefixtures("private_hash_cache")


def images(gen):
    return [np.asarray(s.image, dtype=np.int16) for s in gen.generate(INDICES, batch_size=2, progress=False)]


def max_diff(a, b):
    return max(int(np.abs(x - y).max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("lora")


@pytest.fixture(scope="module")
def kohya(lora_dir):
    return write_tiny_kohya_lora(lora_dir / "thermal_kohya.safetensors")


@pytest.fixture(scope="module")
def base_images():
    return images(StillsGenerator.from_preset("tiny", device="cpu", **SMALL))


@pytest.fixture(scope="module")
def kohya_images(kohya):
    return images(StillsGenerator.from_preset("tiny", device="cpu", lora=kohya, **SMALL))


def test_kohya_lora_changes_the_output(base_images, kohya_images):
    diffs = [np.abs(a - b).mean() for a, b in zip(base_images, kohya_images)]
    assert min(diffs) > 1  # mean grey-level change; strength 0 below gives exactly 0


def test_fused_weight_delta_is_strength_times_up_down_times_alpha_over_rank(kohya):
    base = StillsGenerator.from_preset("tiny", device="cpu", **SMALL).pipe.transformer
    tuned = StillsGenerator.from_preset("tiny", device="cpu", lora=kohya, lora_scale=0.9, **SMALL).pipe.transformer
    tensors = load_file(str(kohya))
    down = tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight"]
    up = tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"]
    rank, alpha = down.shape[0], float(tensors["lora_unet_double_blocks_0_img_attn_qkv.alpha"])
    expected = 0.9 * (up @ down) * alpha / rank  # qkv rows: q, then k, then v
    d = TINY_INNER_DIM
    for i, name in enumerate(("to_q", "to_k", "to_v")):
        delta = (getattr(tuned.transformer_blocks[0].attn, name).weight
                 - getattr(base.transformer_blocks[0].attn, name).weight)
        torch.testing.assert_close(delta, expected[i * d:(i + 1) * d], atol=1e-5, rtol=1e-4)
    assert not any("lora" in n for n, _ in tuned.named_modules())  # fused and unloaded: no PEFT wrappers


def test_strength_zero_gives_the_base_image(kohya, base_images):
    zero = images(StillsGenerator.from_preset("tiny", device="cpu", lora=kohya, lora_scale=0.0, **SMALL))
    assert max_diff(zero, base_images) == 0


def test_half_strength_lies_between_base_and_full(kohya, base_images, kohya_images):
    half = images(StillsGenerator.from_preset("tiny", device="cpu", lora=kohya, lora_scale=0.45, **SMALL))
    for b, h, f in zip(base_images, half, kohya_images):
        assert 0 < np.abs(h - b).mean() < np.abs(f - b).mean()


def test_unfused_adapter_matches_fused(kohya, kohya_images):
    unfused = StillsGenerator.from_preset("tiny", device="cpu", lora=kohya, speed=SpeedOptions(fuse_lora=False),
                                          **SMALL)
    assert unfused.pipe.get_list_adapters() == {"transformer": ["thermal"]}
    assert max_diff(images(unfused), kohya_images) <= 1


def test_comfyui_diffusion_model_keys_load_the_same(lora_dir, kohya_images):
    comfy = write_tiny_kohya_lora(lora_dir / "thermal_comfy.safetensors", key_style="comfy")
    assert next(iter(load_file(str(comfy)))).startswith("diffusion_model.double_blocks.0.")
    assert max_diff(images(StillsGenerator.from_preset("tiny", device="cpu", lora=comfy, **SMALL)), kohya_images) <= 1


def test_lora_with_wrong_shapes_is_refused_naming_file_and_module(tmp_path):
    wrong = write_tiny_kohya_lora(tmp_path / "for_other_model.safetensors", inner_dim=48)
    with pytest.raises(LoraError, match=r"for_other_model\.safetensors.*(input|output) size .*transformer_blocks\.0"):
        StillsGenerator.from_preset("tiny", device="cpu", lora=wrong, **SMALL)


D = TINY_INNER_DIM


@pytest.mark.parametrize("name,tensors,match", [
    ("deep", {"lora_unet_double_blocks_5_img_attn_proj.lora_down.weight": torch.zeros(4, D),
              "lora_unet_double_blocks_5_img_attn_proj.lora_up.weight": torch.zeros(D, 4),
              "lora_unet_double_blocks_5_img_attn_proj.alpha": torch.tensor(4.0)},
     r"deep\.safetensors.*transformer_blocks\.5\.attn\.to_out\.0, which this model does not have"),
    ("unprefixed", {"transformer_blocks.0.attn.to_q.lora_A.weight": torch.ones(4, D),
                    "transformer_blocks.0.attn.to_q.lora_B.weight": torch.ones(D, 4)},
     r"unprefixed\.safetensors.*none of its keys matched"),  # diffusers would ignore it with only a warning
])
def test_lora_that_does_not_fit_the_transformer_is_refused(tmp_path, name, tensors, match):
    path = tmp_path / f"{name}.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(LoraError, match=match):
        StillsGenerator.from_preset("tiny", device="cpu", lora=path, **SMALL)


def test_non_safetensors_lora_is_refused(tmp_path):
    pickled = tmp_path / "thermal.pt"
    torch.save({"lora_unet_x.lora_down.weight": torch.zeros(1, 1)}, pickled)
    with pytest.raises(UnsafeWeightsError, match=r"thermal\.pt is not a \.safetensors file"):
        StillsGenerator.from_preset("tiny", device="cpu", lora=pickled, **SMALL)
    disguised = tmp_path / "disguised.safetensors"
    disguised.write_bytes(pickled.read_bytes())
    with pytest.raises(UnsafeWeightsError, match="not a valid safetensors file"):
        StillsGenerator.from_preset("tiny", device="cpu", lora=disguised, **SMALL)


def test_missing_lora_file_names_the_option(tmp_path):
    with pytest.raises(WeightsNotFoundError, match=r"thermal LoRA weights not found.*--lora"):
        StillsGenerator.from_preset("tiny", device="cpu", lora=tmp_path / "nope.safetensors", **SMALL)


def fluxtrainer_layout(inner=3072):
    """kohya/FluxTrainer keys of one double and one single block at FLUX.1's real sizes, rank 1 (~1 MB)."""
    d, shapes = inner, {}
    for stream in ("img", "txt"):
        shapes.update({f"double_blocks_0_{stream}_attn_qkv": (d, 3 * d), f"double_blocks_0_{stream}_attn_proj": (d, d),
                       f"double_blocks_0_{stream}_mlp_0": (d, 4 * d), f"double_blocks_0_{stream}_mlp_2": (4 * d, d),
                       f"double_blocks_0_{stream}_mod_lin": (d, 6 * d)})
    shapes.update({"single_blocks_0_linear1": (d, 7 * d), "single_blocks_0_linear2": (5 * d, d),
                   "single_blocks_0_modulation_lin": (d, 3 * d)})
    sd = {}
    for name, (fan_in, fan_out) in shapes.items():
        sd[f"lora_unet_{name}.lora_down.weight"] = torch.randn(1, fan_in)
        sd[f"lora_unet_{name}.lora_up.weight"] = torch.randn(fan_out, 1)
        sd[f"lora_unet_{name}.alpha"] = torch.tensor(1.0)
    return sd


def test_released_lora_layout_passes_the_shape_check_at_flux_size():
    """linear1 cannot be tested on the tiny model (diffusers hard-codes FLUX.1's split), so check the real
    layout against a full-width FLUX transformer built on the meta device (no memory, no weights)."""
    from types import SimpleNamespace

    from diffusers import FluxPipeline, FluxTransformer2DModel

    from generator.stills.lora import _check_lora_shapes

    converted = FluxPipeline.lora_state_dict(fluxtrainer_layout())
    assert converted["transformer.single_transformer_blocks.0.proj_mlp.lora_B.weight"].shape == (12288, 1)
    assert converted["transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight"].shape == (3072, 1)
    with torch.device("meta"):
        flux = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True)
        narrower = FluxTransformer2DModel(num_layers=1, num_single_layers=1, guidance_embeds=True,
                                          num_attention_heads=16)
    _check_lora_shapes(SimpleNamespace(transformer=flux, text_encoder=None, text_encoder_2=None), converted, "real")
    with pytest.raises(LoraError, match="made for a different model"):
        _check_lora_shapes(SimpleNamespace(transformer=narrower, text_encoder=None, text_encoder_2=None), converted,
                           "real")

"""Tiny random FLUX pipelines built offline, for tests, the demo and CPU benchmarks.

Every module has FLUX.1-dev's structure (16 latent channels, guidance embedding, CLIP + T5 text encoders,
dynamic-shift flow-matching scheduler) at a few thousand parameters, so the real code paths (LoRA loading,
true CFG, the truncated schedule, batching) run on a CPU in milliseconds. Tokenizers are character-level and
built in memory: nothing is downloaded.
"""

from __future__ import annotations

import string

import torch

# Sizes the tiny kohya LoRA in tests must match: D = heads x head_dim.
TINY_HEADS = 2
TINY_HEAD_DIM = 16
TINY_INNER_DIM = TINY_HEADS * TINY_HEAD_DIM
TINY_TEXT_DIM = 32
TINY_LATENT_CHANNELS = 16


def tiny_clip_tokenizer():
    """Byte-level CLIP tokenizer without merges: 2 specials + 256 chars + 256 word-final chars."""
    import tokenizers
    from transformers import CLIPTokenizer

    alphabet = sorted(tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>"] + alphabet + [c + "</w>" for c in alphabet]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def tiny_t5_tokenizer():
    """Unigram T5 tokenizer over printable ASCII, T5's special-token layout, no sentinel tokens."""
    from transformers import T5TokenizerFast

    chars = string.ascii_letters + string.digits + string.punctuation
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [(c, -5.0) for c in chars] + [("\u2581" + c, -4.0) for c in chars]
    return T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)


def build_tiny_flux(seed: int = 0, num_layers: int = 1, num_single_layers: int = 1):
    """A random FluxPipeline with FLUX.1-dev's layout, in eval mode (T5 dropout would break determinism)."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(seed)
    clip_tokenizer, t5_tokenizer = tiny_clip_tokenizer(), tiny_t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * TINY_LATENT_CHANNELS,
        num_layers=num_layers,
        num_single_layers=num_single_layers,
        attention_head_dim=TINY_HEAD_DIM,
        num_attention_heads=TINY_HEADS,
        joint_attention_dim=TINY_TEXT_DIM,
        pooled_projection_dim=TINY_TEXT_DIM,
        guidance_embeds=True,
        axes_dims_rope=[4, 4, 8],
    )
    clip = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(clip_tokenizer), hidden_size=TINY_TEXT_DIM, intermediate_size=37, num_hidden_layers=2,
        num_attention_heads=4, projection_dim=TINY_TEXT_DIM, bos_token_id=0, eos_token_id=1, pad_token_id=1,
    ))
    t5 = T5EncoderModel(T5Config(
        vocab_size=len(t5_tokenizer), d_model=TINY_TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, feed_forward_proj="gated-gelu",
    ))
    vae = AutoencoderKL(
        latent_channels=TINY_LATENT_CHANNELS,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8,) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,   # FLUX.1 VAE factors
        scaling_factor=0.3611,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)  # FLUX.1-dev values
    for module in (transformer, clip, t5, vae):
        module.eval()
    return FluxPipeline(scheduler, vae, clip, clip_tokenizer, t5, t5_tokenizer, transformer)


def tiny_lora_shapes(inner_dim: int = TINY_INNER_DIM) -> dict[str, tuple[int, int]]:
    """kohya module name -> (in, out) for block 0 of a tiny transformer, as FluxTrainer names them.

    `single_blocks_0_linear1` is left out: diffusers' kohya converter hard-codes FLUX.1's 3072/12288 split for it.
    """
    d = inner_dim
    shapes = {}
    for stream in ("img", "txt"):
        shapes.update({f"double_blocks_0_{stream}_attn_qkv": (d, 3 * d), f"double_blocks_0_{stream}_attn_proj": (d, d),
                       f"double_blocks_0_{stream}_mlp_0": (d, 4 * d), f"double_blocks_0_{stream}_mlp_2": (4 * d, d),
                       f"double_blocks_0_{stream}_mod_lin": (d, 6 * d)})
    shapes.update({"single_blocks_0_linear2": (5 * d, d), "single_blocks_0_modulation_lin": (d, 3 * d)})
    return shapes


def write_tiny_kohya_lora(path, rank: int = 4, alpha: float = 2.0, seed: int = 1, key_style: str = "kohya",
                          inner_dim: int = TINY_INNER_DIM):
    """Write a random kohya/FluxTrainer-format LoRA for the tiny transformer (tests, demo).

    key_style "kohya" gives `lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight`; "comfy" gives the
    ComfyUI form `diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight` of the same tensors.
    """
    from pathlib import Path

    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, (fan_in, fan_out) in tiny_lora_shapes(inner_dim).items():
        key = name if key_style == "kohya" else _comfy_name(name)
        prefix = f"lora_unet_{key}" if key_style == "kohya" else f"diffusion_model.{key}"
        tensors[f"{prefix}.lora_down.weight"] = torch.randn(rank, fan_in, generator=generator) * 0.3
        tensors[f"{prefix}.lora_up.weight"] = torch.randn(fan_out, rank, generator=generator) * 0.3
        tensors[f"{prefix}.alpha"] = torch.tensor(float(alpha))
    path = Path(path)
    save_file(tensors, str(path), metadata={"ss_network_module": "networks.lora_flux"})
    return path


def _comfy_name(kohya_name: str) -> str:
    """double_blocks_0_img_attn_qkv -> double_blocks.0.img_attn.qkv (ComfyUI/BFL module path)."""
    import re

    kind, index, rest = re.fullmatch(r"(double|single)_blocks_(\d+)_(.+)", kohya_name).groups()
    for module in ("img_attn", "txt_attn", "img_mlp", "txt_mlp", "img_mod", "txt_mod", "modulation"):
        if rest.startswith(module + "_"):
            rest = module + "." + rest[len(module) + 1:]
            break
    return f"{kind}_blocks.{index}.{rest}"

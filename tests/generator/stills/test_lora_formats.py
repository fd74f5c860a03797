"""LoRA files are applied whole or refused: DoRA through PEFT, LyCORIS LoKr/LoHa named, malformed modules named,
ignored keys counted per file and refused unless allowed. Files are written the way kohya / LyCORIS write them."""

import pytest
import torch
from safetensors.torch import load_file, save_file

from generator.stills.generate import StillsGenerator
from generator.stills.lora import LoraError, load_lora
from generator.stills.tiny_flux import TINY_INNER_DIM, build_tiny_flux, write_tiny_kohya_lora

D = TINY_INNER_DIM
QKV = "lora_unet_double_blocks_0_img_attn_qkv"
PROJ = "lora_unet_double_blocks_0_img_attn_proj"

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.fixture()
def kohya(tmp_path):
    path = write_tiny_kohya_lora(tmp_path / "thermal.safetensors")
    return path, load_file(str(path))


def rewrite(path, tensors, name):
    out = path.with_name(name)
    save_file(tensors, str(out), metadata={"ss_network_module": "lycoris.kohya"})
    return out


def base_qkv(pipe):
    attn = pipe.transformer.transformer_blocks[0].attn
    return torch.cat([attn.to_q.weight, attn.to_k.weight, attn.to_v.weight]).detach().clone()


def lora_delta(tensors, module):
    down, up = tensors[f"{module}.lora_down.weight"], tensors[f"{module}.lora_up.weight"]
    return up @ down * float(tensors[f"{module}.alpha"]) / down.shape[0]


def test_dora_magnitudes_are_applied_per_row_through_peft(kohya):
    """LyCORIS DoRA (wd_on_out): W' = dora_scale * (W + dW) / ||W + dW||_row; the fused qkv splits into q, k, v."""
    path, tensors = kohya
    base = build_tiny_flux()
    w_qkv = base_qkv(base)
    w_proj = base.transformer.transformer_blocks[0].attn.to_out[0].weight.detach().clone()
    g = torch.Generator().manual_seed(3)
    tensors[f"{QKV}.dora_scale"] = (w_qkv.norm(dim=1, keepdim=True) * (1 + 0.5 * torch.rand(3 * D, 1, generator=g)))
    tensors[f"{PROJ}.dora_scale"] = (w_proj.norm(dim=1, keepdim=True) * (0.5 + torch.rand(D, 1, generator=g)))
    dora = rewrite(path, tensors, "thermal_dora.safetensors")

    pipe = build_tiny_flux()
    record = load_lora(pipe, dora, scale=1.0)
    assert record["dora"] and record["format"] == "kohya + DoRA magnitudes"
    assert record["keys"] == len(tensors) and record["applied_keys"] == len(tensors) and record["ignored_keys"] == []
    for weight, module, name in ((w_qkv, QKV, "qkv"), (w_proj, PROJ, "proj")):
        v = weight + lora_delta(tensors, module)
        expected = tensors[f"{module}.dora_scale"] * v / v.norm(dim=1, keepdim=True)
        got = base_qkv(pipe) if name == "qkv" else pipe.transformer.transformer_blocks[0].attn.to_out[0].weight
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)

    plain = build_tiny_flux()
    load_lora(plain, path, scale=1.0)
    assert (base_qkv(plain) - base_qkv(pipe)).abs().max() > 1e-3  # the magnitudes were not dropped
    mlp = lambda p: p.transformer.transformer_blocks[0].ff.net[0].proj.weight  # noqa: E731  no dora_scale there
    torch.testing.assert_close(mlp(pipe), mlp(plain), atol=1e-5, rtol=1e-4)


def test_dora_magnitude_per_input_column_is_refused(kohya):
    path, tensors = kohya
    tensors[f"{PROJ}.dora_scale"] = torch.ones(1, D)  # LyCORIS wd_on_out=False
    bad = rewrite(path, tensors, "dora_in.safetensors")
    with pytest.raises(LoraError, match=r"dora_in\.safetensors.*double_blocks_0_img_attn_proj\.dora_scale has shape "
                                        r"\(1, 32\).*wd_on_out=False"):
        load_lora(build_tiny_flux(), bad)


@pytest.mark.parametrize("algo,parts,name", [
    ("lokr", {"lokr_w1": (4, 4), "lokr_w2": (8, 8)}, "LoKr"),
    ("loha", {"hada_w1_a": (D, 4), "hada_w1_b": (4, D), "hada_w2_a": (D, 4), "hada_w2_b": (4, D)}, "LoHa"),
])
def test_lycoris_lokr_and_loha_are_refused_by_name(tmp_path, algo, parts, name):
    tensors = {}
    for module in (QKV.replace("qkv", "proj"), "lora_unet_double_blocks_0_txt_attn_proj"):
        tensors.update({f"{module}.{p}": torch.randn(*s) for p, s in parts.items()})
        tensors[f"{module}.alpha"] = torch.tensor(4.0)
    path = tmp_path / f"{algo}.safetensors"
    save_file(tensors, str(path), metadata={"ss_network_module": "lycoris.kohya", "ss_network_args":
                                            f'{{"algo": "{algo}"}}'})
    pipe = build_tiny_flux()
    before = base_qkv(pipe)
    with pytest.raises(LoraError, match=rf"{algo}\.safetensors is a LyCORIS {name}"):
        load_lora(pipe, path)
    assert torch.equal(base_qkv(pipe), before) and pipe.get_list_adapters() == {}


@pytest.mark.parametrize("change,match", [
    (lambda t: t.__setitem__(f"{PROJ}.lora_up.weight", torch.zeros(D, 3)),
     r"rank mismatch in 'lora_unet_double_blocks_0_img_attn_proj': lora_down\.weight \(4, 32\) has rank 4 but "
     r"lora_up\.weight \(32, 3\) has rank 3"),
    (lambda t: t.__setitem__(f"{PROJ}.lora_down.weight", torch.zeros(4, D, 1)),
     r"lora_unet_double_blocks_0_img_attn_proj\.lora_down\.weight has shape \(4, 32, 1\).*2-D"),
    (lambda t: t.__setitem__(f"{PROJ}.lora_up.weight", torch.full((D, 4), float("nan"))),
     r"'lora_unet_double_blocks_0_img_attn_proj\.lora_up\.weight' holds non-finite values"),
    (lambda t: t.pop(f"{PROJ}.lora_up.weight"), r"'lora_unet_double_blocks_0_img_attn_proj' has 'lora_down\.weight' "
                                                 r"but not its up factor"),
])
def test_malformed_modules_are_refused_naming_key_and_shapes(kohya, change, match):
    path, tensors = kohya
    change(tensors)
    bad = rewrite(path, tensors, "malformed.safetensors")
    with pytest.raises(LoraError, match=r"malformed\.safetensors.*" + match):
        load_lora(build_tiny_flux(), bad)


def test_ignored_keys_are_refused_unless_allowed_and_recorded_in_the_sidecar(kohya):
    """A T5 LoRA module and a non-zero `diff_b` (both written by kohya/LyCORIS) are dropped by diffusers' FLUX
    converter: refused by default; allowed, the rest is applied and the sidecar lists what was not."""
    path, tensors = kohya
    t5 = "lora_te2_encoder_block_0_layer_0_SelfAttention_q"
    extra = {f"{t5}.lora_down.weight": torch.randn(4, 32), f"{t5}.lora_up.weight": torch.randn(32, 4),
             f"{t5}.alpha": torch.tensor(4.0), f"{PROJ}.diff_b": torch.randn(D)}
    partial = rewrite(path, {**tensors, **extra}, "with_t5.safetensors")
    pipe = build_tiny_flux()
    before = base_qkv(pipe)
    with pytest.raises(LoraError, match=r"with_t5\.safetensors \(kohya\): 4 of 40 keys would be ignored.*"
                                        r"lora_te2_encoder_block_0.*--lora-allow-ignored-keys"):
        load_lora(pipe, partial)
    assert torch.equal(base_qkv(pipe), before)  # nothing half-applied
    assert not any("lora" in n for n, _ in pipe.transformer.named_modules())

    small = dict(height=32, width=32, num_steps=2, cfg_start_step=1)
    allowed = StillsGenerator.from_preset("tiny", device="cpu", lora=partial, lora_allow_ignored_keys=True,
                                          lora_scale=1.0, **small)
    sidecar = allowed.generate([0], progress=False)[0].sidecar["lora"]
    assert sidecar["keys"] == 40 and sidecar["applied_keys"] == 36
    assert sidecar["ignored_keys"] == sorted(extra)
    whole = StillsGenerator.from_preset("tiny", device="cpu", lora=path, lora_scale=1.0, **small)
    assert torch.equal(base_qkv(allowed.pipe), base_qkv(whole.pipe))  # the 36 applied keys are the whole LoRA
    assert whole.generate([0], progress=False)[0].sidecar["lora"]["ignored_keys"] == []


def test_cli_refuses_ignored_keys_and_applies_with_the_flag(kohya, tmp_path, capsys):
    from thermvision_db.cli.main import main

    path, tensors = kohya
    partial = rewrite(path, {**tensors, f"{PROJ}.diff_b": torch.randn(D)}, "diff_b.safetensors")
    args = ["generate", "--stage", "stills", "-n", "1", "--preset", "tiny", "--stills-size", "32", "--stills-steps",
            "2", "--lora", str(partial)]
    assert main([*args, "--out", str(tmp_path / "refused")]) == 2
    assert "diff_b.safetensors (kohya): 1 of 37 keys would be ignored" in capsys.readouterr().err
    assert not (tmp_path / "refused" / "still_000000.png").exists()
    assert main([*args, "--out", str(tmp_path / "ok"), "--lora-allow-ignored-keys"]) == 0
    import json

    sidecar = json.loads((tmp_path / "ok" / "still_000000.json").read_text())["lora"]
    assert sidecar["ignored_keys"] == [f"{PROJ}.diff_b"] and sidecar["applied_keys"] == 36


def test_clip_text_encoder_keys_diffusers_cannot_load_are_counted_not_fatal_to_the_rest(kohya):
    """kohya `lora_te1_` modules: diffusers' FLUX loader fails on them with the installed transformers; the file is
    refused naming them, and with the option the transformer part is applied exactly as the file without them."""
    path, tensors = kohya
    te = "lora_te1_text_model_encoder_layers_0_self_attn_q_proj"
    extra = {f"{te}.lora_down.weight": torch.randn(4, 32), f"{te}.lora_up.weight": torch.randn(32, 4),
             f"{te}.alpha": torch.tensor(4.0)}
    with_te = rewrite(path, {**tensors, **extra}, "with_te.safetensors")
    pipe = build_tiny_flux()
    before = base_qkv(pipe)
    with pytest.raises(LoraError, match=rf"with_te\.safetensors \(kohya\): 3 of 39 keys would be ignored.*{te}"):
        load_lora(pipe, with_te, scale=1.0)
    assert torch.equal(base_qkv(pipe), before) and pipe.get_list_adapters() == {}  # nothing applied
    record = load_lora(pipe, with_te, scale=1.0, allow_ignored_keys=True)
    assert record["ignored_keys"] == sorted(extra) and record["applied_keys"] == 36
    plain = build_tiny_flux()
    load_lora(plain, path, scale=1.0)
    torch.testing.assert_close(base_qkv(pipe), base_qkv(plain))

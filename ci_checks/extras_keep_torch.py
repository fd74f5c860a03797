"""Install every extra of pyproject.toml (and the FID Inception pair) into a throwaway venv; import it; run one op.

    python ci_checks/extras_keep_torch.py                 # every extra + torchvision/torch-fidelity
    python ci_checks/extras_keep_torch.py eval inception  # some of them

Each line of the README runs as written in a fresh `python -m venv --system-site-packages` (so the installed torch
is seen and never downloaded again), with the README's pin `-c torch-pin.txt`: then torch must still be the same
build, the package must import, and one real operation must give its known result (`torchvision.ops.nms` keeps
the right box, torchmetrics' MSE of ones and zeros is 1, decord counts the frames PyAV wrote, ...). For the
torchvision pair it also checks that the generator keeps working beside whatever was installed (the FLUX text
encoders import; a torchvision that cannot import is named in one line). Needs the package index; prints one
verdict line per extra; exits 1 if any extra does not work.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import tomllib
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# one real operation per extra, with its known result (run by the venv's python; must print OK on success)
OPS = {
    "eval": "import torch, torchmetrics.functional as F; assert float(F.mean_squared_error(torch.ones(4), torch.zeros(4))) == 1.0",
    "decord": ("import av, numpy as np, decord, tempfile, os; p = os.path.join(tempfile.mkdtemp(), 'v.mp4'); c = av.open(p, 'w');"
               " s = c.add_stream('libx264', rate=30); s.width = s.height = 32; s.pix_fmt = 'yuv420p'\n"
               "for i in range(5): [c.mux(q) for q in s.encode(av.VideoFrame.from_ndarray(np.full((32, 32, 3), 40 * i, np.uint8)))]\n"
               "[c.mux(q) for q in s.encode()]; c.close(); assert len(decord.VideoReader(p)) == 5"),
    "fp8": ("import torch; from torchao.quantization import Float8WeightOnlyConfig, quantize_; m = torch.nn.Linear(32, 32);"
            " quantize_(m, Float8WeightOnlyConfig()); assert m(torch.ones(2, 32)).shape == (2, 32)"),
    "test": ("import pytest, onnx, numpy as np, pycocotools.mask as M; from onnx import helper;"
             " a = np.zeros((8, 8), np.uint8, order='F'); a[2:5, 1:4] = 1; assert int(M.area(M.encode(a))) == 9;"
             " onnx.checker.check_model(helper.make_model(helper.make_graph([], 'g', [], [])))"),
    "inception": ("import torch, torchvision, torch_fidelity; b = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]]);"
                  " assert torchvision.ops.nms(b, torch.tensor([0.9, 0.8, 0.7]), 0.5).tolist() == [0, 2]"),
}
GENERATOR_BESIDE_IT = ("import generator.stills; from generator.vision_check import torchvision_note;"
                       " from transformers import CLIPTextModel, T5EncoderModel; from diffusers import FluxPipeline;"
                       " print('note:', torchvision_note())")


def lines() -> dict[str, list[str]]:
    """extra name -> the requirements pip installs for it (the README's lines)."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return {**extras, "inception": ["torchvision", "torch-fidelity"]}


def _python(env_dir: Path) -> str:
    return str(env_dir / "bin" / "python")


def _run(args: list[str], timeout: int = 900, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, **kwargs)


def _last_line(text: str) -> str:
    rows = [r for r in text.strip().splitlines() if r.strip()]
    return " ".join(rows[-1].split())[:300] if rows else ""


def check(name: str, requirements: list[str], torch_version: str, workdir: Path) -> tuple[bool, str]:
    """(works, verdict) of one extra in its own venv."""
    env_dir = workdir / f"venv-{name}"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)  # pip: the system one, run in the venv
    pin = workdir / "torch-pin.txt"
    pin.write_text(f"torch=={torch_version}\n")
    pip = [_python(env_dir), "-m", "pip", "install", "--quiet", "-c", str(pin), *requirements]
    installed = _run(pip)
    if installed.returncode:
        return False, f"pip could not install it with the torch pin: {_last_line(installed.stderr)}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    kept = _run([_python(env_dir), "-c", "import torch; print(torch.__version__)"], env=env)
    if kept.stdout.strip() != torch_version:
        return False, f"REPLACES TORCH: {torch_version} -> {kept.stdout.strip() or _last_line(kept.stderr)}"
    works = _run([_python(env_dir), "-c", OPS[name]], env=env, timeout=300)
    verdict = "installs, keeps torch, imports, op ok" if not works.returncode else f"installs, keeps torch, but FAILS: {_last_line(works.stderr)}"
    ok = not works.returncode
    if name == "inception":  # whatever torchvision pip chose, the generator must still run beside it
        beside = _run([_python(env_dir), "-c", GENERATOR_BESIDE_IT], env=env, timeout=300)
        verdict += ("; the generator runs beside it (" + _last_line(beside.stdout) + ")" if not beside.returncode
                    else f"; the generator BREAKS beside it: {_last_line(beside.stderr)}")
        ok = ok and not beside.returncode
    return ok, verdict


def main(argv: list[str]) -> int:
    import torch

    wanted = lines()
    names = argv or list(wanted)
    unknown = [n for n in names if n not in wanted]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; known: {', '.join(wanted)}")
    failures = 0
    with tempfile.TemporaryDirectory(prefix="extras-") as tmp:
        for name in names:
            ok, verdict = check(name, wanted[name], torch.__version__, Path(tmp))
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} pip install {' '.join(wanted[name])} -c torch-pin.txt: {verdict}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Check that the README's install lines for the extras keep the installed torch (pip resolves, installs nothing).

    python ci_checks/extras_keep_torch.py            # every extra of pyproject.toml + the FID Inception pair

For each line, `pip install --dry-run --report` with the README's torch pin (`-c torch-pin.txt`) must resolve
without installing torch or any nvidia-* package. Needs the package index (it resolves, it does not download
torch); exits 1 naming the line that would replace torch.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def would_install(requirements: list[str], pin: Path) -> list[str]:
    """name==version of every distribution pip would install for `requirements` under the torch pin."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        result = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
                                 "-c", str(pin), *requirements], cwd=ROOT, capture_output=True, text=True)
        if result.returncode:
            raise SystemExit(f"pip could not resolve {' '.join(requirements)} with the torch pin:\n{result.stderr[-2000:]}")
        items = json.loads(report.read_text())["install"]
    return [f"{i['metadata']['name']}=={i['metadata']['version']}" for i in items]


def main() -> int:
    import torch

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    lines = [[f".[{name}]"] for name in extras] + [["torchvision", "torch-fidelity"]]
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        pin = Path(tmp) / "torch-pin.txt"
        pin.write_text(f"torch=={torch.__version__}\n")  # the README's pin line
        for requirements in lines:
            planned = would_install(["-e", *requirements] if requirements[0].startswith(".") else requirements, pin)
            bad = [p for p in planned if p.lower().startswith(("torch==", "nvidia-", "triton=="))]
            failures += bool(bad)
            print(f"pip install {' '.join(requirements)} -c torch-pin.txt: "
                  f"{'REPLACES TORCH: ' + ', '.join(bad) if bad else 'keeps torch ' + torch.__version__}; "
                  f"would install {', '.join(planned) or 'nothing new'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

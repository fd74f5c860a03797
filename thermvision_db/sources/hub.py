"""Where the corpus comes from when no folder is given: $THERMVISION_DB_DIR, the local Hub cache, or the Hub itself."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from thermvision_db.io.offline import hub_offline
from thermvision_db.schema.members import ARCHIVES, HUB_REPO_ID
from thermvision_db.sources.base import SourceError, is_url, local_folder

ENV_DATA_DIR = "THERMVISION_DB_DIR"


def local_copy_hint() -> str:
    """What to do without the Hub (offline, a firewall, no licence accepted yet): name a local copy."""
    return (f"pass data_dir=... (a folder holding {' and '.join(repr(z) for z in ARCHIVES.values())} or their "
            f"extracted folders) or set {ENV_DATA_DIR}; `thermvision-db download DIR` makes one where the Hub is "
            "reachable, `thermvision-db miniature DIR` a small example folder")


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | str:
    """`data_dir` (a folder or a URL), else $THERMVISION_DB_DIR, else the Hub dataset (see `hub_source`)."""
    chosen = data_dir or os.environ.get(ENV_DATA_DIR)
    if chosen:
        return str(chosen) if is_url(chosen) else local_folder(chosen)
    return hub_source()


def hub_source(repo_id: str = HUB_REPO_ID) -> Path | str:
    """The Hub's zips: the local Hub cache when a full download is there, else read in place (hf:// URL).

    With HF_HUB_OFFLINE set only the local cache is possible; `thermvision-db download` makes the full copy.
    """
    if hub_offline():
        return download_from_hub(repo_id)
    from huggingface_hub import snapshot_download

    try:
        folder = Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()),
                                        local_files_only=True))
    except Exception:  # noqa: BLE001 - not downloaded: stream it
        return f"hf://datasets/{repo_id}"
    return folder if all((folder / name).is_file() for name in ARCHIVES.values()) else f"hf://datasets/{repo_id}"


def download_from_hub(repo_id: str = HUB_REPO_ID, token: str | None = None) -> Path:
    """Fetch the two zips from the Hub, resumable (gated: accept the licence on the dataset page, then set HF_TOKEN)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError

    hint = local_copy_hint()
    if hub_offline():
        try:
            return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()), local_files_only=True))
        except Exception as err:
            raise SourceError(f"HF_HUB_OFFLINE is set and {repo_id} is not in the local Hub cache: {hint}") from err
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", allow_patterns=list(ARCHIVES.values()), token=token))
    except GatedRepoError as err:
        raise SourceError(
            f"{repo_id} is gated: accept its non-commercial licence at https://huggingface.co/datasets/{repo_id}, "
            f"then `hf auth login` or set HF_TOKEN; or {hint}"
        ) from err
    except RepositoryNotFoundError as err:
        raise SourceError(f"{repo_id} was not found on the Hub (private or gated without a token?): set HF_TOKEN, or {hint}") from err
    except LocalEntryNotFoundError as err:
        raise SourceError(f"cannot reach the Hub to download {repo_id}: {hint}") from err


def sha256_file(path: str | os.PathLike, chunk: int = 8 << 20, progress: bool = True) -> str:
    """Streaming sha256 with a progress bar: the zips are about 10 GiB each."""
    from tqdm.auto import tqdm

    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as handle, tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=f"sha256 {path.name}", disable=not progress) as bar:
        while block := handle.read(chunk):
            digest.update(block)
            bar.update(len(block))
    return digest.hexdigest()

"""The released corpus at a URL: `hf://datasets/...`, `https://...` (a folder holding the two zips), `s3://`,
`gs://` (with their fsspec backend installed). Rows are read from the zips in place; `download` (sources/download.py)
makes the full local copy that `verify` hashes; `remote_checksums` reads the Hub's LFS sha256 without it.
"""

from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor

from thermvision_db.schema.members import ARCHIVE_SHA256, ARCHIVES, GENDER_ROOT
from thermvision_db.sources.base import ArchiveSource, MissingRemoteFile, SourceError, is_url, local_folder
from thermvision_db.sources.local import ReleaseSource
from thermvision_db.sources.remote_zip import RemoteZipArchive, archive_identity, open_range_reader

logger = logging.getLogger(__name__)


def archive_url(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


class RemoteReleaseSource(ArchiveSource):
    """The released corpus over the zips at a URL; only members a row asks for are fetched."""

    def __init__(self, url: str, storage_options: dict | None = None):
        self.url = url.rstrip("/")
        archives = {}
        opened = {gender: RemoteZipArchive(archive_url(url, zip_name), GENDER_ROOT[gender], storage_options)
                  for gender, zip_name in ARCHIVES.items()}
        with ThreadPoolExecutor(max_workers=len(opened)) as pool:  # both HEADs in one round trip
            found = {gender: pool.submit(_open, archive) for gender, archive in opened.items()}
        for gender, future in found.items():
            err = future.result()
            if err is not None:
                logger.info("%s", err)
            archives[gender] = [] if err is not None else [opened[gender]]
        super().__init__(url, archives)
        if not any(self.archives.values()):
            raise SourceError(f"{url} holds neither {' nor '.join(repr(z) for z in ARCHIVES.values())} (a URL must name "
                              f"the folder that holds the zips; extracted folders are read from local disk only)")

    def fingerprint(self, members=None) -> str:
        """Cache-key part of a URL source: each zip's content identity (LFS sha256 / ETag) and size."""
        digest = hashlib.sha256(self.url.encode())
        for gender, name in ARCHIVES.items():
            found = self.archives.get(gender)
            if not found:
                digest.update(f"{name}:absent".encode())
                continue
            reader = found[0].reader
            digest.update(f"{name}:{reader.size}:{archive_identity(reader.info)}".encode())
        return digest.hexdigest()[:8]

    def bytes_read(self) -> int:
        """Bytes fetched so far by this process (central directories from the disk cache not counted)."""
        return sum(a.reader.bytes_read for found in self.archives.values() for a in found)


def _open(archive: RemoteZipArchive) -> MissingRemoteFile | None:
    """Opens the archive (size and existence); a missing one is returned, any other error raised."""
    try:
        archive.reader  # noqa: B018
    except MissingRemoteFile as err:
        return err
    return None


def open_release(data_dir) -> ArchiveSource:
    """A local folder or a URL, as the builder, `verify` and `preview` read it."""
    return RemoteReleaseSource(data_dir) if is_url(data_dir) else ReleaseSource(local_folder(data_dir))


def _archive_readers(url: str, on_absent=lambda err: None):
    """(zip name, range reader) for both release zips at `url`; (name, None) for one the server does not hold."""
    for name in ARCHIVES.values():
        try:
            yield name, open_range_reader(archive_url(url, name))
        except MissingRemoteFile as err:
            on_absent(err)
            yield name, None


def remote_checksums(url: str) -> dict[str, dict]:
    """Per zip: size, the sha256 the server publishes (the Hub's LFS metadata) or None, and whether it matches."""
    out = {}
    for name, expected in ARCHIVE_SHA256.items():
        try:
            reader = open_range_reader(archive_url(url, name))
        except SourceError as err:
            out[name] = {"present": False, "error": str(err)}
            continue
        info = reader.info
        identity = archive_identity(info) or ""
        sha = identity.split(":", 1)[1] if identity.startswith("sha256:") else None
        out[name] = {"present": True, "size": reader.size, "sha256": sha, "identity": identity or None,
                     "matches": None if sha is None else sha == expected}
    return out


def verify_url(url: str, print_=print) -> int:
    """What a URL tells without downloading: published checksums, the member table against the central
    directories, frame and label counts. Returns the number of problems."""
    problems = 0
    for name, row in remote_checksums(url).items():
        if not row["present"]:
            print_(f"{name}: not present ({row['error']})")
        elif row["sha256"] is None:
            print_(f"{name}: {row['size']:,} bytes; the server publishes no sha256 ({row['identity'] or 'no ETag'}): "
                   f"`thermvision-db download DIR --from {url}` then `verify DIR` hashes it")
        else:
            verdict = "ok" if row["matches"] else f"MISMATCH (expected {ARCHIVE_SHA256[name]})"
            problems += not row["matches"]
            print_(f"{name}: {row['size']:,} bytes, published sha256 {row['sha256']} {verdict} (metadata, not hashed here)")
    source = RemoteReleaseSource(url)
    present = source.present_members()
    frames = sum(source.exists(m.gender, m.frame_png(i)) for m in present for i in range(m.num_frames))
    labels = sum(source.exists(m.gender, m.label_txt(i)) for m in present for i in range(m.num_frames))
    print_(f"member table: {len(present)} of 100 videos present in the central directories; "
           f"{frames:,} PNG frames and {labels:,} label files listed (the release has 30,200 and 30,123)")
    print_(f"read {source.bytes_read():,} bytes (central directories; cached for the next run)")
    return problems

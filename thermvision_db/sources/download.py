"""`thermvision-db download`: the full local copy of the two zips, resumable, verified before it takes its name.

A copy grows in `<zip>.incomplete` beside a note of the server's validator (ETag or Last-Modified). A later run
resumes only when the server still has that file (the validator is sent as `If-Range`, so a server whose file
changed answers with the whole new file); otherwise it starts again. A finished copy is checked (size, the
published sha256 where the server gives one, and the validator once more: a file replaced on the server during
the download is fetched again) and only then renamed. One lock per folder serialises two runs; a run that
writes nothing is an error. Every wait is bounded (`limits`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from thermvision_db.io.atomic import atomic_write_json
from thermvision_db.schema.members import ARCHIVES, HUB_REPO_ID
from thermvision_db.sources import limits
from thermvision_db.sources.base import MissingRemoteFile, SourceError
from thermvision_db.sources.remote import archive_url

logger = logging.getLogger(__name__)

RECORD = ".thermvision-download.json"  # finished copies: size, mtime, sha256, validator
LOCK = ".thermvision-download.lock"
RESTARTS = 2  # a file that changes on the server more often than this during one run is an error


class DownloadError(SourceError):
    """A download that cannot finish with a verified copy; the message names the URL and the fix."""


@dataclass
class RemoteFile:
    url: str
    size: int
    validator: str | None  # strong ETag or Last-Modified: what `If-Range` and the resume note compare
    sha256: str | None  # published by the server (Hub LFS metadata, a Digest header), else None


class _Changed(Exception):
    """The server answered a resume with the whole (new) file: start again from byte 0."""


# ---------------------------------------------------------------------------------------------- transports
class _Http:
    """http(s):// with `requests`: HEAD for size and validator, one streamed GET per attempt."""

    def __init__(self):
        import requests

        self.session = requests.Session()
        self.session.max_redirects = 10  # a server that redirects to itself ends here, named

    def probe(self, url: str) -> RemoteFile:
        import requests

        try:
            r = self.session.head(url, allow_redirects=True, timeout=limits.idle_timeout(),
                                  headers={"Accept-Encoding": "identity"})
        except requests.TooManyRedirects as err:
            raise DownloadError(f"cannot download {url}: the server redirects more than 10 times (a redirect loop); "
                                f"check the URL") from err
        except requests.RequestException as err:
            raise DownloadError(f"cannot reach {url}: {type(err).__name__}: {err} ({limits.timeout_hint()})") from err
        if r.status_code in (404, 410):
            raise MissingRemoteFile(f"{url} does not exist (HTTP {r.status_code})")
        if r.status_code >= 400:
            raise DownloadError(f"cannot download {url}: HTTP {r.status_code} {r.reason}")
        size = r.headers.get("Content-Length")
        if not size or not size.isdigit() or int(size) == 0:
            raise DownloadError(f"{url} reports no size (HTTP {r.status_code}, no Content-Length): nothing to download")
        etag = r.headers.get("ETag")
        validator = etag if etag and not etag.startswith("W/") else r.headers.get("Last-Modified")
        return RemoteFile(url, int(size), validator, _published_sha256(r.headers))

    def stream(self, remote: RemoteFile, start: int, block: int):
        """(first byte offset, blocks): a resume the server refuses (`If-Range` mismatch: 200) starts at 0."""
        import requests

        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
            if remote.validator:
                headers["If-Range"] = remote.validator
        try:
            r = self.session.get(remote.url, headers=headers, stream=True, timeout=limits.idle_timeout())
        except requests.RequestException as err:
            raise OSError(f"{type(err).__name__}: {err}") from err
        if r.status_code == 416 or r.status_code >= 400:
            r.close()
            raise OSError(f"HTTP {r.status_code} {r.reason}")
        begin = 0
        if r.status_code == 206:
            begin = int(r.headers.get("Content-Range", "bytes 0-").split()[1].split("-")[0])
            if begin != start:
                r.close()
                raise OSError(f"the server sent bytes from {begin:,}, not from {start:,}")
        return begin, _blocks(r, block)


def _blocks(response, block: int):
    """Whatever bytes have arrived, at most `block` at a time (`read1`: a trickle still shows progress)."""
    from urllib3.exceptions import HTTPError

    try:
        while data := response.raw.read1(block):
            yield data
    except HTTPError as err:  # a dropped connection, or no byte within the idle limit
        raise OSError(f"{type(err).__name__}: {err}") from err
    finally:
        response.close()


class _Fsspec:
    """s3://, gs://, hf:// and other fsspec URLs: ranged reads of `block` bytes (no `If-Range` there: the
    validator is compared before a resume and again at the end)."""

    def __init__(self):
        self.readers = {}

    def probe(self, url: str) -> RemoteFile:
        from thermvision_db.sources.remote_zip import archive_identity, open_range_reader

        reader = open_range_reader(url)
        reader.retries = 0  # the download's own attempts are the only retries
        self.readers[url] = reader
        identity = archive_identity(reader.info)
        sha = identity.split(":", 1)[1] if identity and identity.startswith("sha256:") else None
        return RemoteFile(url, reader.size, identity, sha)

    def stream(self, remote: RemoteFile, start: int, block: int):
        reader = self.readers[remote.url]

        def blocks():
            done = start
            while done < remote.size:
                try:
                    data = reader.read(done, min(done + block, remote.size), f"bytes {done:,}+")
                except SourceError as err:
                    raise OSError(str(err)) from err
                done += len(data)
                yield data
        return start, blocks()


def _published_sha256(headers) -> str | None:
    """The sha256 a server publishes: `Digest: sha-256=<base64>` (RFC 3230), `Repr-Digest: sha-256=:<b64>:`
    (RFC 9530) or `X-Checksum-Sha256: <hex>`."""
    for key in ("Repr-Digest", "Digest"):
        for part in headers.get(key, "").split(","):
            algo, _, value = part.strip().partition("=")
            if algo.lower() == "sha-256" and value:
                try:
                    return base64.b64decode(value.strip(":")).hex()
                except ValueError:
                    return None
    value = headers.get("X-Checksum-Sha256")
    return value.lower() if value else None


def _transport(url: str):
    return _Http() if url.split("://", 1)[0].lower() in ("http", "https") else _Fsspec()


# ---------------------------------------------------------------------------------------------- one file
def _sha256_of(path: Path) -> hashlib._Hash:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(8 << 20):
            digest.update(block)
    return digest


def _records(dest: Path) -> dict:
    try:
        return json.loads((dest / RECORD).read_text())
    except (OSError, ValueError):
        return {}


def _already_done(target: Path, remote: RemoteFile, record: dict | None) -> bool:
    """A finished copy is kept only when it is provably this file: our record of it (size, mtime, validator),
    or its sha256 against the published one. A same-size file proves nothing."""
    if not target.is_file():
        return False
    stat = target.stat()
    if record and record.get("size") == stat.st_size == remote.size and record.get("mtime_ns") == stat.st_mtime_ns \
            and record.get("validator") == remote.validator and remote.validator is not None \
            and (remote.sha256 is None or record.get("sha256") == remote.sha256):
        return True
    if remote.sha256 and stat.st_size == remote.size:
        return _sha256_of(target).hexdigest() == remote.sha256
    return False


def fetch_file(transport, remote: RemoteFile, target: Path, progress: bool, block: int = 1 << 20) -> dict:
    """Copy one file into `target` (see the module docstring); returns its record."""
    from tqdm.auto import tqdm

    partial = target.with_name(target.name + ".incomplete")
    note = target.with_name(target.name + ".incomplete.json")
    for restart in range(RESTARTS + 1):
        resumable = _read_note(note) == {"url": remote.url, "size": remote.size, "validator": remote.validator}
        if partial.exists() and (not resumable or remote.validator is None or partial.stat().st_size > remote.size):
            logger.info("%s: the partial copy is not of the file the server has now; starting again", partial)
            partial.unlink()
        atomic_write_json(note, {"url": remote.url, "size": remote.size, "validator": remote.validator})
        digest = _sha256_of(partial) if partial.exists() else hashlib.sha256()
        done = partial.stat().st_size if partial.exists() else 0
        try:
            with tqdm(total=remote.size, initial=done, unit="B", unit_scale=True, desc=target.name,
                      disable=not progress) as bar:
                done, digest = _attempts(transport, remote, partial, done, digest, block, bar)
        except _Changed as err:
            logger.warning("%s; the part is of an older version: starting again", err)
            partial.unlink()
            remote = transport.probe(remote.url)
            continue
        if remote.sha256 and digest.hexdigest() != remote.sha256:
            partial.unlink()
            raise DownloadError(f"{remote.url}: the downloaded bytes have sha256 {digest.hexdigest()}, the server "
                                f"publishes {remote.sha256}; the partial copy was deleted: run the download again")
        now = transport.probe(remote.url)
        if (now.size, now.validator) == (remote.size, remote.validator):
            os.replace(partial, target)
            note.unlink(missing_ok=True)
            stat = target.stat()
            return {**asdict(remote), "sha256": digest.hexdigest(), "mtime_ns": stat.st_mtime_ns}
        logger.warning("%s changed on the server during the download (%s -> %s); fetching it again",
                       remote.url, remote.validator, now.validator)
        partial.unlink()
        remote = now
    raise DownloadError(f"{remote.url} changed on the server {RESTARTS + 1} times during the download; try later")


def _attempts(transport, remote, partial: Path, done: int, digest, block: int, bar):
    """Bounded attempts, each bounded in idle and total time, appending to `partial` until it has `size` bytes."""
    last = None
    for attempt in range(limits.retries() + 1):
        if done == remote.size:
            break
        if attempt:
            time.sleep(limits.retry_wait() * 2 ** (attempt - 1))
            logger.info("retry %d/%d of %s from byte %d after: %s", attempt, limits.retries(), remote.url, done, last)
        deadline = time.monotonic() + limits.attempt_timeout(remote.size - done)
        try:
            begin, blocks = transport.stream(remote, done, block)
            if begin != done:  # the whole file instead of the rest: the validator no longer matches
                blocks.close()
                raise _Changed(f"{remote.url} answered the resume from byte {done:,} with the whole file")
            with open(partial, "ab") as handle:
                for data in blocks:
                    if done + len(data) > remote.size:
                        raise OSError(f"the server sent more than the {remote.size:,} bytes it announced")
                    handle.write(data)
                    digest.update(data)
                    done += len(data)
                    bar.update(len(data))
                    if time.monotonic() > deadline:
                        blocks.close()
                        raise TimeoutError(f"attempt ran past {limits.attempt_timeout(remote.size):.0f} s")
                handle.flush()
                os.fsync(handle.fileno())
            if done < remote.size:
                last = OSError(f"the connection ended after {done:,} of {remote.size:,} bytes")
        except (OSError, TimeoutError) as err:
            last = err
    if done != remote.size:
        raise DownloadError(f"cannot download {remote.url}: {done:,} of {remote.size:,} bytes after "
                            f"{limits.retries() + 1} attempts ({type(last).__name__}: {last}; {limits.timeout_hint()}). "
                            f"Run the same command again to resume from {partial}")
    return done, digest


def _read_note(note: Path) -> dict | None:
    try:
        return json.loads(note.read_text())
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------- both zips
def download_release(url: str, dest: str | os.PathLike, progress: bool = True, chunk: int = 1 << 20) -> Path:
    """Copy the zips at `url` into `dest` (see the module docstring); the Hub uses huggingface_hub's download."""
    from filelock import FileLock, Timeout

    dest = Path(dest).expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    if url.rstrip("/") == f"hf://datasets/{HUB_REPO_ID}":  # huggingface_hub resumes and verifies its downloads
        from huggingface_hub import hf_hub_download

        for name in ARCHIVES.values():
            hf_hub_download(HUB_REPO_ID, name, repo_type="dataset", local_dir=dest)
        return dest
    lock = FileLock(str(dest / LOCK), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise DownloadError(f"another download is writing into {dest} (it holds {dest / LOCK}); wait for it to "
                            f"finish, or download into another folder") from None
    try:
        return _download_all(url, dest, progress, chunk)
    finally:
        lock.release()


def _download_all(url: str, dest: Path, progress: bool, chunk: int) -> Path:
    transport = _transport(url)
    records, absent = _records(dest), []
    for name in ARCHIVES.values():
        try:
            remote = transport.probe(archive_url(url, name))
        except MissingRemoteFile as err:
            logger.warning("%s", err)
            absent.append(str(err))
            continue
        if _already_done(dest / name, remote, records.get(name)):
            continue
        records[name] = fetch_file(transport, remote, dest / name, progress, chunk)
        atomic_write_json(dest / RECORD, records)
    if len(absent) == len(ARCHIVES):
        raise DownloadError(f"nothing was written to {dest}: {'; '.join(absent)}. The URL must name the folder "
                            f"that holds {' and '.join(repr(n) for n in ARCHIVES.values())}")
    return dest


def add_download_parser(sub) -> None:
    """`thermvision-db download`: registered by `thermvision_db.cli.main`."""
    p = sub.add_parser("download", help="the full copy of the two zips (about 21 GB), resumable; verify hashes it")
    p.add_argument("out", help="folder to write the zips into")
    p.add_argument("--from", dest="url", default=f"hf://datasets/{HUB_REPO_ID}",
                   help="where the zips live: a URL or a folder")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_download)


def run_download(args) -> int:
    out = download_release(args.url, args.out, progress=not args.quiet)
    print(f"{', '.join(n for n in ARCHIVES.values() if (out / n).is_file())} in {out} (verified as downloaded); "
          f"`thermvision-db verify {out}` hashes them against the release's checksums")
    return 0

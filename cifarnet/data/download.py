"""Fetch an archive with a progress bar, verify its MD5, and extract it without escapes.

The download goes to ``<name>.part`` beside the final name and is renamed only once complete and
verified, so an interrupted or corrupt download never sits under the final name. On a terminal
the progress is a tqdm bar; elsewhere (logs, CI) a line at each quarter.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import sys
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

log = logging.getLogger(__name__)


class DownloadError(RuntimeError):
    """The archive could not be fetched or did not verify."""


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(url: str, dest: Path, md5: str, timeout: float = 30.0) -> Path:
    """Download ``url`` to ``dest`` and check its MD5; ``dest`` appears only if it verifies.

    Raises:
        DownloadError: network failure (with the address) or checksum mismatch (the bad file
            is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    received = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            log.info("downloading %s (%s) to %s", url, f"{total / 1e6:.1f} MB" if total else "size unknown", dest)
            started, next_quarter = time.perf_counter(), 0.25
            with tqdm(total=total or None, desc=f"downloading {dest.name}", unit="B", unit_scale=True,
                      disable=not sys.stderr.isatty(), leave=False) as bar:
                while block := response.read(1 << 16):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
                    if bar.disable and total and received >= next_quarter * total:   # plain lines off a terminal
                        log.info("downloaded %.0f%% (%.1f of %.1f MB, %.1f MB/s)", 100 * received / total,
                                 received / 1e6, total / 1e6, received / 1e6 / max(time.perf_counter() - started, 1e-9))
                        next_quarter += 0.25
        if total and received != total:
            raise http.client.IncompleteRead(b"", total - received)
    except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        if isinstance(err, http.client.IncompleteRead):
            reason = f"the connection closed after {received:,} of {received + (err.expected or 0):,} bytes"
        else:
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {err}"
        raise DownloadError(f"could not download {url}: {reason}; nothing was kept") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    actual = md5sum(part)
    if actual != md5:
        part.unlink(missing_ok=True)
        raise DownloadError(f"{url} downloaded with MD5 {actual}, expected {md5}; the file was deleted. "
                            "Try again, or place the archive by hand.")
    os.replace(part, dest)
    return dest


def safe_extract(archive: Path, target: Path) -> None:
    """Extract a tar archive into ``target``, refusing any member that would land outside it.

    Absolute paths, ``..`` components, links pointing outside and device files are all refused
    before anything is written.
    """
    target = Path(target).resolve()
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            dest = (target / m.name).resolve()
            if not dest.is_relative_to(target):
                raise DownloadError(f"{archive}: member {m.name!r} would be written outside {target}; "
                                    "refusing to extract")
            if m.issym() or m.islnk():
                link = (dest.parent / m.linkname).resolve() if m.issym() else (target / m.linkname).resolve()
                if not link.is_relative_to(target):
                    raise DownloadError(f"{archive}: link {m.name!r} -> {m.linkname!r} points outside {target}")
            if m.isdev():
                raise DownloadError(f"{archive}: member {m.name!r} is a device file; refusing to extract")
        try:
            tar.extractall(target, members=members, filter="data")
        except TypeError:  # Python < 3.11.4 has no extraction filters; the checks above still hold
            tar.extractall(target, members=members)

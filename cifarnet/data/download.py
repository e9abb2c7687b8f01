"""Fetch an archive with a progress bar, verify its MD5, and extract it without escapes.

The download goes to ``<name>.part`` beside the final name and is renamed only once complete and
verified, so an interrupted or corrupt download never sits under the final name.
"""
from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from ..progress import ProgressBar


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
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            bar = ProgressBar(total, f"downloading {dest.name}", unit="B", plain_every=0.25)
            while block := response.read(1 << 16):
                out.write(block)
                bar.update(len(block))
            bar.close()
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        part.unlink(missing_ok=True)
        raise DownloadError(f"could not download {url}: {getattr(err, 'reason', err)}") from None
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

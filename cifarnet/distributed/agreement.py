"""Ranks that would compute different things refuse to start: same code, same command line."""
from __future__ import annotations

import hashlib
import sys
from functools import lru_cache
from pathlib import Path

from .. import __version__
from ..errors import CifarnetError


class RankMismatch(CifarnetError, RuntimeError):
    """Ranks of one run differ in code or command line (raised on every rank)."""


@lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A digest of this cifarnet's source and configs (``.py`` and ``.yaml`` under the package and its
    ``conf/``): equal on two machines exactly when they run the same code."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256(__version__.encode())
    conf = next((c for c in (package / "conf", package.parent / "conf") if c.is_dir()), None)
    for root in (package, conf):
        if root is None:
            continue
        for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".yaml")):
            digest.update(f"{root.name}/{path.relative_to(root).as_posix()}".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def identity(argv: list[str] | None = None) -> dict[str, object]:
    """What must be equal on every rank: the code's fingerprint and the command line's arguments."""
    return {"code": code_fingerprint(), "version": __version__, "argv": list(sys.argv[1:] if argv is None else argv)}


def check_agreement(identities: list[dict[str, object]]) -> None:
    """Raise :class:`RankMismatch` (one line, naming the first rank that differs from rank 0) unless
    every rank's :func:`identity` equals rank 0's."""
    first = identities[0]
    for rank, other in enumerate(identities[1:], start=1):
        if other["code"] != first["code"]:
            raise RankMismatch(f"rank {rank} runs other code than rank 0 (cifarnet {other['version']}, "
                               f"fingerprint {other['code']}; rank 0: {first['version']}, {first['code']}): "
                               "install the same cifarnet on every machine")
        if other["argv"] != first["argv"]:
            raise RankMismatch(f"rank {rank} was started with other arguments than rank 0 "
                               f"({' '.join(other['argv'])!r} vs {' '.join(first['argv'])!r}): every rank must "
                               "run the same command")

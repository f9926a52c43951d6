"""Download MNIST / Fashion-MNIST from their public mirrors, verified against published checksums.

Each file is fetched from the mirrors in order (the next one is tried when a mirror fails or
serves a file with the wrong checksum), written to a temporary file in the destination folder,
verified, and only then moved into place with :func:`os.replace`, so a partial or corrupt
download never sits under the final name.  Files already present with the right checksum are
skipped.

The checksums are the MD5 values torchvision publishes for these files
(``torchvision/datasets/mnist.py``, classes ``MNIST`` and ``FashionMNIST``).  A checksum record
is ``"<algorithm>:<hex digest>"``, with ``md5`` or ``sha256`` as the algorithm.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Mapping

from tqdm import tqdm

from imae.errors import DataError

#: Base URLs of the public mirrors, tried in order.
MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ],
    "fashion-mnist": [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ],
}

#: ``{variant: {file name: "algorithm:hex digest"}}``, as published by torchvision.
CHECKSUMS: dict[str, dict[str, str]] = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "md5:25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "md5:bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "md5:bb300cfdad3c16e7a12a480ee83cd310",
    },
}

SUPPORTED_ALGORITHMS = ("md5", "sha256")
_CHUNK = 1 << 16
_USER_AGENT = "imae-data-download (Python urllib)"
#: What a failed request can raise: URLError/HTTPError/timeouts are OSError; a connection cut
#: mid-body raises http.client.IncompleteRead; a malformed URL raises ValueError.
_NETWORK_ERRORS = (OSError, http.client.HTTPException, ValueError)

__all__ = ["CHECKSUMS", "MIRRORS", "download_dataset", "file_digest", "parse_checksum"]


class _BadDownload(Exception):
    """A download that arrived short or with the wrong checksum (caught inside this module)."""


def download_dataset(
    name: str,
    root: Path,
    mirrors: list[str] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> Path:
    """Download the four ``.gz`` files of ``name`` into ``root/<name>/`` and return that folder.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: the data folder; the files land in ``root/<name>/``, where
            :func:`imae.data.mnist.load_mnist` finds them.
        mirrors: base URLs to try in order instead of the public mirrors.
        timeout: seconds to wait on a silent connection before trying the next mirror.
        progress: show a tqdm progress bar on stderr for each file.
        checksums: ``{file name: "md5:<hex>" or "sha256:<hex>"}`` replacing the published
            table (for tests and private mirrors).

    Raises:
        DataError: for an unknown data set, a folder that cannot be written, or a file that no
            mirror served with the right checksum (the message gives each mirror's failure).
    """
    variant = _variant(name)
    table = dict(CHECKSUMS[variant] if checksums is None else checksums)
    bases = list(MIRRORS[variant] if mirrors is None else mirrors)
    if not bases:
        raise DataError("no mirrors given; pass at least one base URL, or none to use the public ones")
    folder = Path(root).expanduser() / variant
    _make_folder(folder)
    for file_name, record in table.items():
        destination = folder / file_name
        if destination.is_file():
            if _matches(destination, record):
                _say(progress, f"{destination} is present and verified; skipping")
                continue
            _say(progress, f"{destination} does not match its checksum; downloading it again")
        _download_file(file_name, record, bases, destination, timeout, progress)
    return folder


def _variant(name: str) -> str:
    variant = name.lower().replace("_", "-")
    if variant not in MIRRORS:
        raise DataError(
            f"cannot download {name!r}: known downloads are {', '.join(MIRRORS)} "
            "(the digits data set ships with imae and dSprites is rendered when absent)"
        )
    return variant


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(
            f"cannot create {folder} ({error.strerror or error}); pass a --root folder you can write to"
        ) from None


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr)


# --------------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------------


def parse_checksum(record: str) -> tuple[str, str]:
    """``(algorithm, lower-case hex digest)`` of a ``"md5:<hex>"`` / ``"sha256:<hex>"`` record."""
    algorithm, _, digest = record.partition(":")
    algorithm = algorithm.strip().lower()
    if algorithm not in SUPPORTED_ALGORITHMS or not digest.strip():
        raise DataError(
            f"bad checksum record {record!r}; write it as 'md5:<hex digest>' or 'sha256:<hex digest>'"
        )
    return algorithm, digest.strip().lower()


def file_digest(path: Path, algorithm: str) -> str:
    """The hex digest of ``path`` with ``algorithm`` (``md5`` or ``sha256``)."""
    hasher = hashlib.new(algorithm)
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            hasher.update(chunk)
    return hasher.hexdigest()


def _matches(path: Path, record: str) -> bool:
    algorithm, expected = parse_checksum(record)
    try:
        return file_digest(path, algorithm) == expected
    except OSError:
        return False


# --------------------------------------------------------------------------------------------
# Fetching one file
# --------------------------------------------------------------------------------------------


def _download_file(
    file_name: str, record: str, bases: list[str], destination: Path, timeout: float, progress: bool
) -> None:
    """Fetch ``file_name`` from the first mirror that serves it with the right checksum."""
    algorithm, expected = parse_checksum(record)
    failures = []
    for base in bases:
        url = base.rstrip("/") + "/" + file_name
        _say(progress, f"downloading {url}")
        try:
            _fetch_verified(url, destination, algorithm, expected, timeout, progress)
            return
        except _BadDownload as error:
            failures.append(f"{url}: {error}")
        except _NETWORK_ERRORS as error:
            failures.append(f"{url}: {_describe(error)}")
        _say(progress, f"failed: {failures[-1]}")
    raise DataError(
        f"could not download {file_name} into {destination.parent}: "
        + "; ".join(failures)
        + ". Check your internet connection or proxy and try again, or fetch the file by hand "
        f"into {destination.parent}"
    )


def _describe(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return f"cannot connect ({error.reason})"
    if isinstance(error, TimeoutError):
        return f"timed out ({error})"
    if isinstance(error, http.client.IncompleteRead):
        return f"connection closed after {len(error.partial)} bytes"
    return f"{type(error).__name__}: {error}"


def _fetch_verified(
    url: str, destination: Path, algorithm: str, expected: str, timeout: float, progress: bool
) -> None:
    """Stream ``url`` into a temp file beside ``destination``, verify it, then move it in place.

    The temp file is removed on every failure, including an interrupt.
    """
    handle, temp_name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".part", dir=destination.parent)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            digest = _stream(url, out, algorithm, timeout, progress, destination.name)
        if digest != expected:
            raise _BadDownload(f"{algorithm} checksum {digest} differs from the expected {expected}")
        os.chmod(temp, 0o644)  # mkstemp makes the file private; data files are usually shared
        os.replace(temp, destination)
    finally:
        temp.unlink(missing_ok=True)


def _stream(url: str, out: BinaryIO, algorithm: str, timeout: float, progress: bool, label: str) -> str:
    """Copy the body of ``url`` into ``out`` and return its hex digest."""
    hasher = hashlib.new(algorithm)
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=label, file=sys.stderr, disable=not progress, leave=False
        ) as bar:
            received = 0
            while chunk := response.read(_CHUNK):
                hasher.update(chunk)
                out.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received != total:
        raise _BadDownload(f"received {received} of {total} bytes; the connection was cut")
    return hasher.hexdigest()

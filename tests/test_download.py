"""Downloading MNIST-style files from a local HTTP server (the tests never leave 127.0.0.1)."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from imae.data import download
from imae.data.download import download_dataset, parse_checksum
from imae.data.mnist import load_mnist
from imae.errors import DataError

FILE_NAMES = tuple(download.CHECKSUMS["mnist"])


def _idx(array: np.ndarray) -> bytes:
    shape = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return (0x0800 | array.ndim).to_bytes(4, "big") + shape + array.astype(np.uint8).tobytes()


def _fixture_files() -> dict[str, bytes]:
    """Small gzipped IDX files standing in for the four published ones."""
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte.gz": rng.integers(0, 256, (4, 28, 28)),
        "train-labels-idx1-ubyte.gz": rng.integers(0, 10, 4),
        "t10k-images-idx3-ubyte.gz": rng.integers(0, 256, (2, 28, 28)),
        "t10k-labels-idx1-ubyte.gz": rng.integers(0, 10, 2),
    }
    return {name: gzip.compress(_idx(a), compresslevel=1, mtime=0) for name, a in arrays.items()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        self.requests.append(self.path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``(base URL, files, request log)`` of a server with the fixtures under ``/good/``."""
    www = tmp_path_factory.mktemp("www")
    files = _fixture_files()
    (www / "good").mkdir()
    for name, data in files.items():
        (www / "good" / name).write_bytes(data)
    requests: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"requests": requests})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", files, requests
    server.shutdown()
    server.server_close()


def _md5s(files: dict[str, bytes]) -> dict[str, str]:
    return {name: "md5:" + hashlib.md5(data).hexdigest() for name, data in files.items()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_published_table_has_eight_md5_records():
    for variant in ("mnist", "fashion-mnist"):
        assert set(download.CHECKSUMS[variant]) == set(FILE_NAMES)
        for record in download.CHECKSUMS[variant].values():
            algorithm, digest = parse_checksum(record)
            assert algorithm == "md5" and len(digest) == 32
    assert download.MIRRORS["mnist"][0].startswith("https://ossci-datasets.s3.amazonaws.com")


def test_good_path_files_land_verified_and_load(tmp_path, served):
    base, files, _ = served
    folder = download_dataset("mnist", tmp_path, mirrors=[f"{base}/good/"], checksums=_md5s(files), progress=False)
    assert folder == tmp_path / "mnist"
    assert _leftovers(folder) == sorted(files)
    for name, data in files.items():
        assert (folder / name).read_bytes() == data
    data = load_mnist(tmp_path, variant="mnist", split="all")
    assert len(data) == 6 and data.image_shape == (28, 28)


def test_progress_goes_to_stderr(tmp_path, served, capsys):
    base, files, _ = served
    download_dataset("mnist", tmp_path, mirrors=[f"{base}/good/"], checksums=_md5s(files), progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"downloading {base}/good/train-images-idx3-ubyte.gz" in captured.err


def test_patched_module_tables_and_sha256(tmp_path, served, monkeypatch):
    base, files, _ = served
    sha = {name: "sha256:" + hashlib.sha256(data).hexdigest() for name, data in files.items()}
    monkeypatch.setitem(download.CHECKSUMS, "fashion-mnist", sha)
    monkeypatch.setitem(download.MIRRORS, "fashion-mnist", [f"{base}/good"])
    folder = download_dataset("fashion_mnist", tmp_path, progress=False)
    assert folder == tmp_path / "fashion-mnist"
    assert len(load_mnist(tmp_path, variant="fashion-mnist", split="test")) == 2


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_fallback_to_the_next_mirror(tmp_path, served):
    base, files, _ = served
    mirrors = [f"http://127.0.0.1:{_closed_port()}/", f"{base}/missing/", f"{base}/good/"]
    folder = download_dataset("mnist", tmp_path, mirrors=mirrors, checksums=_md5s(files), timeout=5, progress=False)
    assert _leftovers(folder) == sorted(files)


def test_checksum_mismatch_leaves_nothing_behind(tmp_path, served):
    base, files, _ = served
    wrong = {"t10k-images-idx3-ubyte.gz": "md5:" + "0" * 32}
    with pytest.raises(DataError) as caught:
        download_dataset("mnist", tmp_path, mirrors=[f"{base}/good/"], checksums=wrong, progress=False)
    message = str(caught.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "checksum" in message
    assert _leftovers(tmp_path / "mnist") == []


def test_all_mirrors_fail_names_file_and_reasons(tmp_path, served):
    base, files, _ = served
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz.*HTTP 404"):
        download_dataset("mnist", tmp_path, mirrors=[f"{base}/missing/"], checksums=_md5s(files), progress=False)
    assert _leftovers(tmp_path / "mnist") == []


def test_present_files_are_skipped_and_bad_ones_replaced(tmp_path, served):
    base, files, requests = served
    folder = tmp_path / "mnist"
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    stale = folder / "train-labels-idx1-ubyte.gz"
    stale.write_bytes(b"a corrupt leftover")
    requests.clear()
    download_dataset("mnist", tmp_path, mirrors=[f"{base}/good/"], checksums=_md5s(files), progress=False)
    assert requests == ["/good/train-labels-idx1-ubyte.gz"]
    assert stale.read_bytes() == files["train-labels-idx1-ubyte.gz"]
    assert _leftovers(folder) == sorted(files)


def test_unknown_name_and_bad_record(tmp_path):
    with pytest.raises(DataError, match="mnist, fashion-mnist"):
        download_dataset("cifar10", tmp_path, progress=False)
    with pytest.raises(DataError, match="md5:<hex digest>"):
        parse_checksum("crc32:1234")

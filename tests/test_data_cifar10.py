"""CIFAR-10 loading: official layout, validation, safe unpickling, download and extraction."""
import hashlib
import http.server
import io
import pickle
import tarfile
import threading

import numpy as np
import pytest

from cifarnet.data import DataError, load_dataset
from cifarnet.data.cifar10 import load_cifar10, read_batch

from .cifar_fixtures import CLASSES, make_rows, tar_of, write_batch, write_cifar
from .payloads import TouchPayload


def test_loads_official_layout(tmp_path):
    write_cifar(tmp_path, per_batch=8, test=6)
    data = load_cifar10(tmp_path, download=False)
    assert data.train.images.shape == (40, 32, 32, 3) and data.train.images.dtype == np.uint8
    assert data.test.images.shape == (6, 32, 32, 3)
    assert data.class_names == CLASSES
    rows, labels = make_rows(8, 1)                       # data_batch_1's content
    # row layout is channel-major: 1024 red, 1024 green, 1024 blue values
    assert data.train.images[0, 2, 5, 1] == rows[0, 1024 + 2 * 32 + 5]
    assert data.train.labels[:8].tolist() == labels


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path / "nowhere", download=False)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py" / "data_batch_1") in message
    assert "cs.toronto.edu" in message and "extract" in message


def test_no_network_says_what_where_and_how(tmp_path):
    url = "http://127.0.0.1:9/cifar-10-python.tar.gz"     # discard port: nothing listens
    with pytest.raises(DataError) as err:
        load_cifar10(tmp_path, download=True, url=url)
    message = str(err.value)
    assert url in message                                          # the address tried
    assert str(tmp_path / "cifar-10-batches-py") in message        # where it looked
    assert "download failed" in message and "extract it into" in message   # how to place by hand
    assert not list(tmp_path.glob("*.part")) and not (tmp_path / "cifar-10-python.tar.gz").exists()


def test_truncated_batch_file_is_named(tmp_path):
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(DataError, match=r"data_batch_3.*truncated or corrupt"):
        load_cifar10(tmp_path, download=False)


def test_wrong_row_length(tmp_path):
    folder = write_cifar(tmp_path)
    write_batch(folder / "data_batch_2", np.zeros((4, 3000), np.uint8), [0, 1, 2, 3])
    with pytest.raises(DataError, match=r"data_batch_2.*3072.*\(4, 3000\)"):
        load_cifar10(tmp_path, download=False)


def test_labels_out_of_range(tmp_path):
    folder = write_cifar(tmp_path)
    write_batch(folder / "test_batch", np.zeros((3, 3072), np.uint8), [0, 10, 2])
    with pytest.raises(DataError, match=r"test_batch.*label 10 out of range 0\.\.9"):
        load_cifar10(tmp_path, download=False)


def test_row_and_label_counts_must_agree(tmp_path):
    folder = write_cifar(tmp_path)
    write_batch(folder / "data_batch_1", np.zeros((3, 3072), np.uint8), [0, 1])
    with pytest.raises(DataError, match="3 images but 2 labels"):
        read_batch(folder / "data_batch_1")


def test_missing_keys(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({b"pixels": np.zeros((1, 3072), np.uint8)}, f)
    with pytest.raises(DataError, match=r"b'data' and b'labels'"):
        read_batch(path)


def test_pickle_that_runs_code_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    folder = write_cifar(tmp_path)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": TouchPayload(sentinel), b"labels": [0]}, f)
    with open(tmp_path / "control", "wb") as f:                 # proof the payload is live
        pickle.dump(TouchPayload(tmp_path / "control_ran"), f)
    pickle.loads((tmp_path / "control").read_bytes())
    assert (tmp_path / "control_ran").exists()
    with pytest.raises(DataError, match=r"data_batch_1.*refusing to load posix\.system"):
        load_cifar10(tmp_path, download=False)
    assert not sentinel.exists()


class _Server:
    """Serve one payload over HTTP on 127.0.0.1 (never the internet), on a free port.

    ``drop_after``: announce the whole payload but close the connection after that many bytes.
    """

    def __init__(self, payload: bytes, drop_after: int | None = None):
        body = payload

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body if drop_after is None else body[:drop_after])
                if drop_after is not None:
                    self.wfile.flush()
                    self.close_connection = True

            def log_message(self, *args):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/cifar-10-python.tar.gz"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verifies_md5_and_extracts(tmp_path):
    archive = tar_of(write_cifar(tmp_path / "src"))
    md5 = hashlib.md5(archive).hexdigest()
    root = tmp_path / "root"
    with _Server(archive) as server:
        data = load_cifar10(root, download=True, url=server.url, md5=md5)
    assert len(data.train) == 40 and (root / "cifar-10-python.tar.gz").exists()
    assert not list(root.glob("*.part"))


def test_download_with_bad_md5_leaves_nothing(tmp_path):
    archive = tar_of(write_cifar(tmp_path / "src"))
    root = tmp_path / "root"
    with _Server(archive) as server:
        with pytest.raises(DataError, match=r"MD5 [0-9a-f]{32}, expected 0{32}"):
            load_cifar10(root, download=True, url=server.url, md5="0" * 32)
    assert not root.exists()          # no archive, no .part, not even the data folder it made


def test_a_connection_dropped_mid_transfer_ends_clearly_and_keeps_nothing(tmp_path):
    archive = tar_of(write_cifar(tmp_path / "src"))
    root = tmp_path / "root"
    with _Server(archive, drop_after=len(archive) // 2) as server:
        with pytest.raises(DataError, match=rf"the connection closed after {len(archive) // 2:,} of "
                                            rf"{len(archive):,} bytes; nothing was kept"):
            load_cifar10(root, download=True, url=server.url, md5=hashlib.md5(archive).hexdigest())
    assert not root.exists()          # no archive, no .part, not even the data folder it made
    with _Server(archive) as server:                             # the next try downloads it whole
        assert len(load_cifar10(root, download=True, url=server.url, md5=hashlib.md5(archive).hexdigest()).train)


def test_archive_member_escaping_the_target_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = b"escaped"
        info = tarfile.TarInfo("cifar-10-batches-py/../../escaped.txt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    archive = buf.getvalue()
    root = tmp_path / "a" / "root"
    with _Server(archive) as server:
        with pytest.raises(DataError, match="outside"):
            load_cifar10(root, download=True, url=server.url, md5=hashlib.md5(archive).hexdigest())
    assert not (tmp_path / "a" / "escaped.txt").exists() and not (tmp_path / "escaped.txt").exists()


def test_load_dataset_carves_validation(tmp_path):
    write_cifar(tmp_path)
    data = load_dataset("cifar10", root=tmp_path, download=False, val_size=10, val_seed=3)
    again = load_dataset("cifar10", root=tmp_path, download=False, val_size=10, val_seed=3)
    assert len(data.train) == 30 and len(data.val) == 10 and len(data.test) == 6
    np.testing.assert_array_equal(data.val.images, again.val.images)
    full = load_dataset("cifar10", root=tmp_path, download=False)
    together = np.concatenate([data.train.images, data.val.images]).reshape(40, -1)
    assert sorted(map(bytes, together)) == sorted(map(bytes, full.train.images.reshape(40, -1)))
    with pytest.raises(KeyError, match="known: cifar10, image_folder, synthetic"):
        load_dataset("mnist")

"""Download, cache reuse, size and sha256 checks, mirror fallback and the no-network message, against a local server."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from pathlib import Path

import pytest

from lhcbpid import data
from lhcbpid.cli import main
from lhcbpid.errors import InputError

PAYLOAD = b"TrackP,Label\n1.0,Muon\n" * 100


class _Server:
    """A tiny HTTP server on 127.0.0.1 serving in-memory files, counting requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


def _point_at(monkeypatch, urls: tuple[str, ...], size: int = len(PAYLOAD)) -> None:
    """Make the dataset 'training' download from `urls` with the given expected size."""
    monkeypatch.setattr(data, "URLS", {"training": urls, "test": urls})
    monkeypatch.setattr(data, "SIZES", {"training": size, "test": size})


def _closed_port_url() -> str:
    """A URL on a local port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/training.csv.gz"


def test_download_then_cached_reuse(server, monkeypatch, tmp_path):
    server.files["/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz", f"{server.url}/mirror.csv.gz"))
    path = data.fetch_dataset("training", tmp_path)
    assert path == tmp_path / "training.csv.gz"
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/training.csv.gz"]
    assert data.fetch_dataset("training", tmp_path) == path
    assert server.requests == ["/training.csv.gz"], "the cached file must be reused without a request"
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_sha256_recorded_and_change_detected(server, monkeypatch, tmp_path, capsys):
    server.files["/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz",))
    path = data.fetch_dataset("training", tmp_path)
    record = json.loads((tmp_path / "training.csv.gz.sha256.json").read_text())
    assert record["sha256"] == data.file_sha256(path)
    assert record["bytes"] == len(PAYLOAD)

    path.write_bytes(PAYLOAD[:-1] + b"X")  # same size, different content
    assert data.fetch_dataset("training", tmp_path) == path
    assert "differs" in capsys.readouterr().err
    assert len(server.requests) == 2, "a changed file must be downloaded again"
    assert path.read_bytes() == PAYLOAD


def test_changed_server_file_rejected_against_record(server, monkeypatch, tmp_path):
    server.files["/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz",))
    path = data.fetch_dataset("training", tmp_path)
    path.unlink()
    server.files["/training.csv.gz"] = PAYLOAD[:-1] + b"X"
    with pytest.raises(InputError, match="recorded at first download"):
        data.fetch_dataset("training", tmp_path)
    assert not path.exists()


def test_wrong_size_download_rejected_and_not_kept(server, monkeypatch, tmp_path):
    server.files["/training.csv.gz"] = PAYLOAD[:-10]
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz",))
    with pytest.raises(InputError, match=f"got {len(PAYLOAD) - 10:,} bytes, expected {len(PAYLOAD):,}"):
        data.fetch_dataset("training", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_cached_file_with_wrong_size_is_downloaded_again(server, monkeypatch, tmp_path):
    server.files["/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz",))
    (tmp_path / "training.csv.gz").write_bytes(PAYLOAD[:100])  # a partial file from elsewhere
    assert data.fetch_dataset("training", tmp_path).read_bytes() == PAYLOAD


def test_mirror_used_when_first_url_404s(server, monkeypatch, tmp_path):
    server.files["/mirror/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/missing/training.csv.gz", f"{server.url}/mirror/training.csv.gz"))
    path = data.fetch_dataset("training", tmp_path)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/missing/training.csv.gz", "/mirror/training.csv.gz"]
    assert not (tmp_path / "training.csv.gz.part").exists()
    assert "mirror" in json.loads((tmp_path / "training.csv.gz.sha256.json").read_text())["source"]


def test_no_network_names_url_path_and_data_option(monkeypatch, tmp_path):
    url = _closed_port_url()
    _point_at(monkeypatch, (url,))
    with pytest.raises(InputError) as info:
        data.fetch_dataset("training", tmp_path)
    message = str(info.value)
    assert url in message
    assert str(tmp_path / "training.csv.gz") in message
    assert "--data PATH" in message
    assert "connection to 127.0.0.1 refused" in message
    assert "\n" not in message
    assert list(tmp_path.iterdir()) == []


def test_cli_fetch_without_network_exits_2(monkeypatch, tmp_path, capsys):
    url = _closed_port_url()
    _point_at(monkeypatch, (url,))
    assert main(["fetch", "training", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lhcbpid fetch: error: cannot download training.csv.gz")
    assert "--data PATH" in err and "Traceback" not in err


def test_unknown_dataset_name():
    with pytest.raises(InputError, match="unknown dataset"):
        data.fetch_dataset("validation")


def test_default_data_dir_honours_env(monkeypatch, tmp_path):
    monkeypatch.setenv("LHCBPID_DATA", str(tmp_path))
    assert data.default_data_dir() == tmp_path
    monkeypatch.delenv("LHCBPID_DATA")
    assert "lhcbpid" in str(data.default_data_dir())


def test_resolve_data(tmp_path):
    existing = tmp_path / "x.csv"
    existing.write_text("a\n1\n")
    assert data.resolve_data(existing, "training") == existing
    with pytest.raises(InputError, match="no such file"):
        data.resolve_data(tmp_path / "missing.csv", "training")


def test_published_urls_and_sizes():
    assert data.SIZES == {"training": 247_314_656, "test": 248_364_236}
    for name in ("training", "test"):
        first, mirror = data.URLS[name]
        assert first.endswith(f"Week_2/{name}.csv.gz") and "hse-aml" in first
        assert mirror.endswith(f"data/{name}.csv.gz") and "MohamedElashri/Hadron-Collider-ML" in mirror


def test_real_urls_have_no_network_error(tmp_path):
    """On a machine without internet the real URLs fail with the one-line message (skipped when online)."""
    try:
        socket.create_connection(("github.com", 443), timeout=2).close()
        pytest.skip("online")
    except OSError:
        pass
    with pytest.raises(InputError, match="--data PATH"):
        data.fetch_dataset("test", tmp_path)
    assert not (tmp_path / "test.csv.gz").exists()


def test_data_dir_unwritable(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    _point_at(monkeypatch, (_closed_port_url(),))
    with pytest.raises(InputError, match="cannot create the data directory"):
        data.fetch_dataset("training", blocker / "sub")


def test_paths_are_paths(tmp_path, server, monkeypatch):
    server.files["/training.csv.gz"] = PAYLOAD
    _point_at(monkeypatch, (f"{server.url}/training.csv.gz",))
    assert isinstance(data.fetch_dataset("training", str(tmp_path)), Path)


def test_cli_fetch_with_no_names_fetches_both(monkeypatch, tmp_path, capsys):
    """A bare `lhcbpid fetch` parses (no argparse error) and tries both files."""
    url = _closed_port_url()
    _point_at(monkeypatch, (url,))
    with pytest.raises(InputError):
        data.fetch_dataset("test", tmp_path)
    assert main(["fetch", "--data-dir", str(tmp_path)]) == 2
    assert "cannot download training.csv.gz" in capsys.readouterr().err


def test_cli_fetch_unknown_name_exits_2(capsys):
    assert main(["fetch", "validation"]) == 2
    assert "unknown dataset 'validation'" in capsys.readouterr().err

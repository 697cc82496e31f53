"""Tests for okddip_tf.data.download: when a missing tfds dataset is downloaded, and that an offline
machine fails in seconds. Nothing here downloads: local servers stand in for download hosts."""

import http.server
import itertools
import json
import socket
import threading
import time

import pytest

from okddip_tf import config as base_config
from okddip_tf import data
from okddip_tf.data import download


@pytest.fixture(autouse=True)
def downloads_not_turned_off(monkeypatch):
    monkeypatch.delenv(download.OFFLINE_ENV, raising=False)


class CountingHandler(http.server.BaseHTTPRequestHandler):
    requests = []

    def do_HEAD(self):  # noqa: N802 (http.server's name)
        CountingHandler.requests.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def http_host():
    """The URL of a local HTTP server that answers HEAD requests and counts them."""
    CountingHandler.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def closed_port():
    """A local port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def silent_host():
    """The URL of a local socket that accepts connections and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


class FakeBuilder:
    """What `ensure_prepared` uses of a tfds builder; records download_and_prepare calls."""

    name, data_dir = "fake_set", "/nowhere/fake_set/1.0.0"

    def __init__(self, prepared, urls):
        self.prepared, self.downloads = prepared, 0
        self.url_infos = {url: None for url in urls}

    def is_prepared(self):
        return self.prepared

    def download_and_prepare(self):
        self.downloads += 1


# --------------------------------------------------------------------------- the decision


@pytest.mark.parametrize("prepared, allowed, reachable",
                         list(itertools.product([False, True], repeat=3)))
def test_decide_probes_only_when_a_download_would_follow(prepared, allowed, reachable):
    probes = []

    def probe():
        probes.append(1)
        return reachable

    action = download.decide(prepared, allowed, probe)
    if prepared:
        expected = download.LOAD
    elif not allowed:
        expected = download.DISABLED
    else:
        expected = download.DOWNLOAD if reachable else download.UNREACHABLE
    assert action == expected
    assert len(probes) == (not prepared and allowed)


def test_the_environment_variable_turns_downloads_off_over_the_config():
    assert download.downloads_allowed(True, {}) is True
    assert download.downloads_allowed(False, {}) is False
    for value in ("1", "true", "YES", " on "):
        assert download.downloads_allowed(True, {download.OFFLINE_ENV: value}) is False
    for value in ("", "0", "false", "No", "off"):
        assert download.downloads_allowed(True, {download.OFFLINE_ENV: value}) is True
    with pytest.raises(ValueError, match=r"OKDDIP_OFFLINE='maybe'.*set it to 1"):
        download.downloads_allowed(True, {download.OFFLINE_ENV: "maybe"})
    with pytest.raises(ValueError, match="data.download must be True or False, got 'no'"):
        download.downloads_allowed("no", {})


# --------------------------------------------------------------------------- the reachability check


def test_reachability_check_asks_each_host_once(http_host, closed_port):
    assert download.unreachable([f"{http_host}/a.tar.gz", f"{http_host}/b.tar.gz"]) == {}
    assert CountingHandler.requests == ["/a.tar.gz"]
    failures = download.unreachable([f"http://127.0.0.1:{closed_port}/x", f"{http_host}/c"])
    assert list(failures) == [f"127.0.0.1:{closed_port}"]
    assert "refused" in failures[f"127.0.0.1:{closed_port}"].lower()


def test_reachability_check_gives_up_at_its_timeout(silent_host):
    start = time.monotonic()
    failures = download.unreachable([f"{silent_host}/x"], timeout=0.5)
    assert time.monotonic() - start < 2.0
    assert list(failures) == [silent_host.split("//")[1]]


# --------------------------------------------------------------------------- ensure_prepared


def test_missing_dataset_is_downloaded_when_its_host_answers(http_host, capsys):
    builder = FakeBuilder(prepared=False, urls=[f"{http_host}/data.tar.gz"])
    download.ensure_prepared(builder, "fake_set", "/data")
    assert builder.downloads == 1 and CountingHandler.requests == ["/data.tar.gz"]
    assert "downloading and preparing it once into /nowhere/fake_set/1.0.0" in capsys.readouterr().out


def test_prepared_dataset_asks_no_host(http_host):
    builder = FakeBuilder(prepared=True, urls=[f"{http_host}/data.tar.gz"])
    download.ensure_prepared(builder, "fake_set", "/data")
    assert builder.downloads == 0 and CountingHandler.requests == []


def test_downloads_off_fail_with_the_message_and_ask_no_host(http_host, monkeypatch):
    for download_flag, env in ((False, "0"), (True, "1")):
        monkeypatch.setenv(download.OFFLINE_ENV, env)
        builder = FakeBuilder(prepared=False, urls=[f"{http_host}/data.tar.gz"])
        with pytest.raises(FileNotFoundError) as err:
            download.ensure_prepared(builder, "fake_set", "/data", download=download_flag)
        message = str(err.value)
        for part in ("not prepared in data_dir /data", "downloads are disabled",
                     "'fake_set/<version>/'", "tfds build fake_set --data_dir=<dir>"):
            assert part in message
        assert builder.downloads == 0 and CountingHandler.requests == []


def test_unreachable_or_unknown_host_fails_with_the_message(closed_port):
    builder = FakeBuilder(prepared=False, urls=[f"http://127.0.0.1:{closed_port}/data.tar.gz"])
    with pytest.raises(FileNotFoundError, match=rf"(?s)unreachable \(127\.0\.0\.1:{closed_port}: "
                                                r".*tfds build fake_set"):
        download.ensure_prepared(builder, "fake_set", "/data")
    builder = FakeBuilder(prepared=False, urls=[])
    with pytest.raises(FileNotFoundError, match="lists no download URLs"):
        download.ensure_prepared(builder, "fake_set", "/data")
    assert builder.downloads == 0


# --------------------------------------------------------------------------- through load_datasets


def test_offline_machine_fails_in_seconds_with_the_message(tmp_path, monkeypatch):
    """The real cifar10 builder and its real host: on a machine without a route to it (CI's),
    the default (download on) fails at once instead of letting tfds retry for minutes."""
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel

    urls = list(tfds.builder("cifar10", data_dir=str(tmp_path)).url_infos)
    if not download.unreachable(urls):
        pytest.skip(f"this machine reaches {urls}; the offline path needs a machine without")

    def no_download(*args, **kwargs):
        raise AssertionError("a test started a download")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_download)
    start = time.monotonic()
    with pytest.raises(FileNotFoundError) as err:
        data.load_datasets(name="cifar10", data_dir=str(tmp_path))
    assert time.monotonic() - start < download.PROBE_TIMEOUT + 5
    message = str(err.value)
    for part in (str(tmp_path), "unreachable (www.cs.toronto.edu", "TFDS_DATA_DIR",
                 "tfds build cifar10"):
        assert part in message


def test_prepared_dataset_loads_without_any_connection(tfds_data_dir, monkeypatch):
    """The config's data section, download on: a prepared dataset touches no network."""

    def no_connection(*args, **kwargs):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", no_connection)
    monkeypatch.setattr(socket, "getaddrinfo", no_connection)
    config = base_config.get_base_config()
    assert config.data.download is True
    config.data.data_dir, config.data.train_examples = tfds_data_dir, 64
    config.data.eval_examples, config.data.batch_size = 32, 32
    train, _, info = data.load_datasets(**config.data, seed=0)
    assert info.num_train_examples == 64
    assert next(iter(train))[0].shape == (32, 32, 32, 3)


def test_runs_and_searches_resume_whatever_data_download_says(tmp_path):
    """Whether data may be downloaded changes no result: a run or a search started before the
    key existed, or with the other value, resumes."""
    from okddip_tf import atomic_files, rundir, tuner  # pylint: disable=import-outside-toplevel

    config = base_config.get_base_config()
    saved = json.loads(json.dumps(config.to_dict()))  # as a workdir's config.json holds it
    del saved["data"]["download"]
    assert rundir.config_differences(saved, config) == {}
    config.data.download = False
    assert rundir.config_differences(saved, config) == {}
    config.data.batch_size = 64  # a change that does matter is still refused
    assert list(rundir.config_differences(saved, config)) == ["data.batch_size"]
    atomic_files.write_json(tmp_path / tuner.SEARCH_CONFIG, saved)
    (tmp_path / tuner.PROJECT).mkdir()
    config.data.batch_size = saved["data"]["batch_size"]
    tuner.check_same_search(str(tmp_path), config)

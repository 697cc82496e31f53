"""Whether a tfds dataset that is not prepared yet gets downloaded, and the download itself.

By default a dataset missing from the data dir is downloaded and prepared once through tfds (its
own cache, checksums and progress bars), as `tfds.load` would. Before that, each host of the
dataset's download URLs gets one HTTP HEAD request bounded by a few seconds (PROBE_TIMEOUT):
tfds retries an unreachable download for minutes, so a machine without a route to the data fails
at once instead, saying where it looked and how to bring the data over.
`data.download=False` or the environment variable OKDDIP_OFFLINE=1 turn downloads off; a
prepared dataset is read without any network connection.
"""

import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

from okddip_tf import compat
from okddip_tf.errors import ConfigError, MissingInputError

OFFLINE_ENV = "OKDDIP_OFFLINE"
PROBE_TIMEOUT = 4.0  # seconds for the whole reachability check
LOAD, DOWNLOAD, DISABLED, UNREACHABLE = "load", "download", "disabled", "unreachable"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def decide(prepared, download_allowed, reachable):
    """What to do about a dataset: LOAD, DOWNLOAD, DISABLED or UNREACHABLE.

    Args:
      prepared: the dataset is prepared in the data dir.
      download_allowed: downloads are on (see `downloads_allowed`).
      reachable: a callable with no arguments, True when the download hosts answer; it is
        called only when its answer matters (never for a prepared dataset or with downloads
        off), so nothing touches the network otherwise.
    """
    if prepared:
        return LOAD
    if not download_allowed:
        return DISABLED
    return DOWNLOAD if reachable() else UNREACHABLE


def downloads_allowed(config_value=True, environ=None):
    """`data.download`, unless $OKDDIP_OFFLINE turns downloads off (it wins over the config)."""
    if not isinstance(config_value, bool):
        raise ConfigError(f"data.download must be True or False, got {config_value!r}.")
    environ = os.environ if environ is None else environ
    value = environ.get(OFFLINE_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise ConfigError(f"{OFFLINE_ENV}={value!r} is not understood; set it to 1 to never "
                          "download datasets, or to 0 (or leave it unset) to allow downloads.")
    return config_value and value not in _TRUE


def unreachable(urls, timeout=PROBE_TIMEOUT):
    """{host: why} for the hosts of `urls` that give no HTTP answer within `timeout` seconds.

    One HEAD request per host, all at once, through urllib (which follows the proxy settings of
    the environment, as tfds' downloads do). Any HTTP status counts as an answer. The deadline
    also bounds name resolution, which socket timeouts do not.
    """
    first_url = {}
    for url in urls:
        first_url.setdefault(urllib.parse.urlsplit(url).netloc, url)
    why_not = {}  # host -> None (it answered) or why it did not

    def ask(host, url):
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                   timeout=timeout).close()
            why_not[host] = None
        except urllib.error.HTTPError:  # the server answered
            why_not[host] = None
        except (OSError, ValueError) as error:  # URLError, timeouts, refused, bad URL
            why_not[host] = str(getattr(error, "reason", error)) or type(error).__name__

    threads = [threading.Thread(target=ask, args=item, daemon=True) for item in first_url.items()]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    seen = dict(why_not)  # a thread past the deadline may still write
    return {host: seen.get(host, f"no answer within {timeout:g} s")
            for host in first_url if seen.get(host, "") is not None}


def ensure_prepared(builder, name, searched, download=True, timeout=PROBE_TIMEOUT):
    """Downloads and prepares `builder`'s dataset when it is missing and that is allowed.

    Args:
      builder: a tfds `DatasetBuilder`.
      name: the dataset name as the user wrote it.
      searched: the data dir, in words, for the error message.
      download: `data.download`.
      timeout: seconds the reachability check may take.

    Raises:
      FileNotFoundError: the dataset is not prepared and is not downloaded here (it needs a
        manual download, downloads are off, the hosts are unreachable, or tfds lists no
        download URLs to check).
    """
    urls, failures = [], {}

    def reachable():  # the URLs are read only here: a prepared dataset needs none
        urls.extend(compat.download_urls(builder))
        failures.update(unreachable(urls, timeout) if urls else {})
        return bool(urls) and not failures

    manual = getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", None)  # tfds' public class field
    if manual and not builder.is_prepared():
        raise MissingInputError(
            f"tfds dataset {name!r} is not prepared in data_dir {searched}, and tfds cannot "
            f"download it: it needs a manual download. tfds says: {' '.join(manual.split())} "
            f"Place those files in a folder and run `tfds build {name} --manual_dir=<that "
            "folder> --data_dir=<dir>`, then set TFDS_DATA_DIR or data.data_dir to <dir>; or "
            "use data.source=folder with <directory>/<split>/<class_name>/ image files.")
    action = decide(builder.is_prepared(), downloads_allowed(download), reachable)
    if action == LOAD:
        return
    if action == DOWNLOAD:
        print(f"tfds dataset {name!r} is not prepared in {searched}: downloading and preparing "
              f"it once into {builder.data_dir} (set {OFFLINE_ENV}=1 or data.download=False "
              "to never download).", flush=True)
        builder.download_and_prepare()
        return
    if action == DISABLED:
        reason = f"downloads are disabled by data.download=False or {OFFLINE_ENV}=1"
    elif not urls:
        reason = "tfds lists no download URLs for it to check, so it is not downloaded here"
    else:
        hosts = "; ".join(f"{host}: {why}" for host, why in sorted(failures.items()))
        reason = f"it could not be downloaded: its download host is unreachable ({hosts})"
    raise MissingInputError(
        f"tfds dataset {name!r} is not prepared in data_dir {searched} and {reason}. Set "
        f"TFDS_DATA_DIR or data.data_dir to a folder holding '{builder.name}/<version>/', or "
        f"prepare it on a networked machine with `tfds build {name} --data_dir=<dir>` and copy "
        "it over.")

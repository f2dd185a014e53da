"""Sources and hostile input: secrets in stream URLs stay out of ids, errors and logs, and a drop
folder does not follow links to files outside it."""

from __future__ import annotations

import logging
import shutil
import threading
import time
from pathlib import Path

import pytest

from maskrt.stream.sources import DropFolderSource, StreamSource, open_source, redact_url
from streaming_fixtures import face_paths
from streaming_servers import free_port

SECRET = "SECRET123"
PASSWORD_IN_URL = "admin:pw@"  # the user-info's password ("pw" alone is also in "pwd=")


def secret_url() -> str:
    # Nothing listens on the port: the source fails fast, with an error and log lines to check.
    return f"http://admin:pw@127.0.0.1:{free_port()}/video.cgi?user=admin&pwd={SECRET}"


def assert_no_secret(text: str) -> None:
    assert SECRET not in text and PASSWORD_IN_URL not in text, text


def test_redact_url_hides_the_password_and_secret_query_parameters() -> None:
    url = "http://admin:pw@host/video.cgi?user=admin&pwd=SECRET123"
    assert redact_url(url) == "http://admin:***@host/video.cgi?user=admin&pwd=***"
    assert (redact_url("rtsp://h/x?Token=a&res=hd&API_KEY=b&sig=c#f")
            == "rtsp://h/x?Token=***&res=hd&API_KEY=***&sig=***#f")
    assert redact_url("rtsp://h/x?channel=1&subtype=0") == "rtsp://h/x?channel=1&subtype=0"
    assert redact_url("clip.avi") == "clip.avi"


@pytest.mark.parametrize("make", [StreamSource, open_source], ids=["StreamSource", "open_source"])
def test_stream_secrets_stay_out_of_id_errors_and_logs(make, caplog) -> None:
    url = secret_url()
    source = make(url, retries=0, backoff=(0.05, 0.05), timeout_s=1)
    assert isinstance(source, StreamSource)
    assert source.url == url  # the real URL is still the one opened
    assert source.id.endswith("/video.cgi?user=admin&pwd=***") and "admin:***@" in source.id
    with caplog.at_level(logging.DEBUG, logger="maskrt"):
        frames = list(source.frames(threading.Event()))
    assert frames and frames[0].error and source.last_error
    for text in [source.id, source.last_error, repr(source), source.describe(), caplog.text,
                 *(f"{f.uri} {f.error}" for f in frames)]:
        assert_no_secret(text)


# --------------------------------------------------------------------------- drop folder links

def drop_folder_with_links(tmp_path: Path) -> Path:
    """folder/inside.jpg, folder/in_link.jpg -> inside.jpg, folder/out_link.jpg -> a JPEG
    outside the folder."""
    face = face_paths(1)[0]
    folder = tmp_path / "drop"
    folder.mkdir()
    shutil.copy(face, folder / "inside.jpg")
    shutil.copy(face, tmp_path / "outside.jpg")
    (folder / "in_link.jpg").symlink_to("inside.jpg")
    (folder / "out_link.jpg").symlink_to(tmp_path / "outside.jpg")
    return folder


def watch_names(source: DropFolderSource, count: int) -> list[str]:
    """The names of the frames the drop folder yields (waits for count, then a little longer)."""
    stop = threading.Event()
    got: list = []
    thread = threading.Thread(target=lambda: got.extend(source.frames(stop)))
    thread.start()
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # nothing more may come
    stop.set()
    thread.join(5)
    assert not thread.is_alive()
    assert all(f.error is None and f.data for f in got), [f.error for f in got]
    return sorted(Path(f.uri).name for f in got)


def test_drop_folder_skips_links_to_files_outside_it(tmp_path: Path) -> None:
    folder = drop_folder_with_links(tmp_path)
    source = DropFolderSource(folder, settle_s=0.0, poll_s=0.02)
    assert watch_names(source, 2) == ["in_link.jpg", "inside.jpg"]
    assert source.skipped_files == 1  # counted once, not once per poll


def test_drop_folder_follows_outside_links_when_asked(tmp_path: Path) -> None:
    folder = drop_folder_with_links(tmp_path)
    source = open_source(f"drop:{folder}", settle_s=0.0, poll_s=0.02, follow_links=True)
    assert isinstance(source, DropFolderSource) and source.follow_links
    assert watch_names(source, 3) == ["in_link.jpg", "inside.jpg", "out_link.jpg"]
    assert source.skipped_files == 0

"""The ready banner of ``python -m bot serve``: what it says, that it is a closed box, and that it
waits for /healthz."""

from __future__ import annotations

import io
import re
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

from bot import banner

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_the_box_shows_urls_the_new_demo_account_and_how_to_stop() -> None:
    text = banner.render("http://127.0.0.1:8080", ("demo", "s3cret-Pw"))
    assert "http://127.0.0.1:8080/ " in text and "http://127.0.0.1:8080/console" in text
    assert "username demo   password s3cret-Pw" in text
    assert "only this once" in text
    assert "Ctrl-C" in text
    assert "\x1b" not in text  # no colour unless asked for (a log file, a pipe)


def test_without_a_new_account_the_box_says_how_to_reset_the_password() -> None:
    text = banner.render("http://127.0.0.1:8080", None)
    assert "username demo   password" not in text and "only this once" not in text
    assert "python -m bot reset-password --username demo" in text


def test_the_box_is_closed_and_aligned_with_and_without_colour() -> None:
    for color in (False, True):
        lines = ANSI.sub("", banner.render("http://example.test:9", ("demo", "x" * 40), color=color)).splitlines()
        assert lines[0].startswith("╔") and lines[0].endswith("╗")
        assert lines[-1].startswith("╚") and lines[-1].endswith("╝")
        assert all(line.startswith("║") and line.endswith("║") for line in lines[1:-1])
        assert len({len(line) for line in lines}) == 1


def test_colour_only_when_asked() -> None:
    assert "\x1b[1;32m" in banner.render("http://h:1", None, color=True)


def test_not_ready_warns() -> None:
    text = banner.render("http://h:1", None, ready=False)
    assert "not 200 yet" in text and "Humanline is ready" not in text


def test_base_url_reaches_a_wildcard_bind_through_loopback() -> None:
    assert banner.base_url("0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert banner.base_url("::", 80) == "http://127.0.0.1:80"
    assert banner.base_url("10.0.0.5", 8080) == "http://10.0.0.5:8080"
    assert banner.base_url("::1", 8080) == "http://[::1]:8080"


class _Health(BaseHTTPRequestHandler):
    ready = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(200 if self.ready.is_set() and self.path == "/healthz" else 503)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_announce_waits_for_healthz_200() -> None:
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out = _Tty()
    try:
        thread = banner.announce_when_ready("127.0.0.1", server.server_address[1], ("demo", "pw"), out=out,
                                            timeout_s=30, poll_s=0.02)
        thread.join(0.3)
        assert thread.is_alive() and out.getvalue() == ""  # 503: still waiting
        _Health.ready.set()
        thread.join(10)
        assert not thread.is_alive()
        text = out.getvalue()
        assert "Humanline is ready" in text and "password pw" in text and "\x1b[1;32m" in text
    finally:
        server.shutdown()
        _Health.ready.clear()


def test_announce_gives_up_with_a_warning() -> None:
    out = io.StringIO()
    # nothing listens on port 9 of loopback (discard): connection refused until the timeout
    banner.announce_when_ready("127.0.0.1", 9, None, out=out, timeout_s=0.2, poll_s=0.05).join(10)
    assert "not 200 yet" in out.getvalue() and "\x1b" not in out.getvalue()

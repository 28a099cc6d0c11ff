"""The box ``python -m bot serve`` prints once the hub is ready: where to open it and how to log in.

:func:`render` is pure (the text for given URLs and account); :func:`announce_when_ready` waits in
a daemon thread until ``/healthz`` answers 200 (every brain worker has loaded the model) and then
prints it, so the box is the last thing on the terminal when the system can really be used.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.error
import urllib.request
from typing import TextIO

# Bold green frame and title on a terminal; plain text in a log or a pipe.
_BOLD_GREEN, _BOLD, _YELLOW, _RESET = "\x1b[1;32m", "\x1b[1m", "\x1b[33m", "\x1b[0m"
#: how long to wait for /healthz before printing the box anyway, with a warning
READY_TIMEOUT_S = 300.0


def base_url(host: str, port: int) -> str:
    """The address to open in a browser: a wildcard bind address is reached through loopback."""
    shown = "127.0.0.1" if host in ("", "0.0.0.0", "::") else host
    if ":" in shown:  # an IPv6 literal
        shown = f"[{shown}]"
    return f"http://{shown}:{port}"


def render(url: str, demo: tuple[str, str] | None, *, color: bool = False, ready: bool = True) -> str:
    """The box, as text: widget and console URLs, the demo account, how to stop.

    ``demo`` is ``(username, password)`` when this run created the demo agent (the password is
    shown only this once); otherwise the box says how to set a new password. ``ready=False``
    adds a warning that ``/healthz`` has not answered 200 yet.
    """
    rows: list[tuple[str, str]] = [
        ("Chat widget (demo site)", f"{url}/"),
        ("Agent console", f"{url}/console"),
    ]
    if demo is not None:
        rows.append(("Demo account", f"username {demo[0]}   password {demo[1]}"))
        notes = ["The password is shown only this once: note it now."]
    else:
        rows.append(("Demo account", "none created by this run (agents exist, or not the SQLite demo)"))
        notes = ["Forgot its password? python -m bot reset-password --username demo"]
    rows.append(("Stop", "Ctrl-C"))
    label_width = max(len(label) for label, _ in rows)
    title = "Humanline is ready" if ready else "Humanline started, but /healthz is not 200 yet"
    body = [title, ""] + [f"{label.ljust(label_width)}   {value}" for label, value in rows] + ["", *notes]
    if not ready:
        body.append("The model may still be loading or have failed: see the log above.")
    width = max(len(line) for line in body)
    frame = (_BOLD_GREEN, _RESET) if color else ("", "")
    out = [f"{frame[0]}╔{'═' * (width + 4)}╗{frame[1]}"]
    for i, line in enumerate(body):
        padded = line.ljust(width)
        if color and i == 0:
            padded = f"{_BOLD}{padded}{_RESET}"
        elif color and line in notes:
            padded = f"{_YELLOW}{padded}{_RESET}"
        out.append(f"{frame[0]}║{frame[1]}  {padded}  {frame[0]}║{frame[1]}")
    out.append(f"{frame[0]}╚{'═' * (width + 4)}╝{frame[1]}")
    return "\n".join(out)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):  # not listening yet, or 503 while the model loads
        return False


def announce_when_ready(
    host: str, port: int, demo: tuple[str, str] | None, out: TextIO | None = None,
    timeout_s: float = READY_TIMEOUT_S, poll_s: float = 0.5,
) -> threading.Thread:
    """Print the box on ``out`` (stdout) once ``/healthz`` answers 200, or after ``timeout_s`` with a
    warning; runs in a daemon thread so that it never holds the server up."""
    stream = out or sys.stdout
    url = base_url(host, port)

    def wait_and_print() -> None:
        deadline = time.monotonic() + timeout_s
        while not (ready := _healthy(url)) and time.monotonic() < deadline:
            time.sleep(poll_s)
        stream.write("\n" + render(url, demo, color=stream.isatty(), ready=ready) + "\n\n")
        stream.flush()

    thread = threading.Thread(target=wait_and_print, name="humanline-banner", daemon=True)
    thread.start()
    return thread

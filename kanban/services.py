"""Probes for `[[preflight.check]]`: is a URL, a TCP port or a command answering?"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request


def probe_url(url: str, timeout: float) -> tuple[bool, str]:
    if not url.startswith(("http://", "https://")):
        return False, f"{url} is not an http(s) URL"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            return resp.status < 400, f"{url} answered {resp.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return False, f"{url} did not answer: {reason}"


def probe_tcp(address: str, timeout: float) -> tuple[bool, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return True, f"{address} accepts connections"
    except (OSError, ValueError) as exc:
        return False, f"{address} refused or timed out: {exc}"


def probe_command(argv: list[str] | tuple[str, ...], timeout: float, cwd: str) -> tuple[bool, str]:
    from kanban.runner import run_bounded

    shown = " ".join(argv)
    try:
        done = run_bounded(argv, cwd, timeout=timeout, keep_tail=True)
    except FileNotFoundError:
        return False, f"{argv[0]} is not on PATH"
    except OSError as exc:
        return False, f"'{shown}' could not start: {exc.strerror}"
    if done.timed_out:
        return False, f"'{shown}' did not finish within {timeout:g}s"
    if done.returncode == 0:
        return True, f"'{shown}' exited 0"
    tail = (done.errors or done.output).decode(errors="replace").strip().splitlines()[-1:] or [""]
    return False, f"'{shown}' exited {done.returncode}: {tail[0][:200]}"

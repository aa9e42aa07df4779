"""Requests forged by other sites: a per-session token on every POST, and a Host check.

Why: the gallery installs and removes files on this machine, and a page on any other site could
make the browser POST to ``127.0.0.1``. Such a page cannot read this one, so it cannot know the
token kept in the (signed, same-site) session cookie and echoed in every form. It could read it
by DNS rebinding (its own name, re-pointed at 127.0.0.1, makes the gallery same-origin to it),
which is why a gallery on a loopback address answers only requests addressed to a loopback name.
"""

from __future__ import annotations

import secrets

from flask import abort, request, session

FIELD = "csrf"
#: the names a gallery bound to a loopback address answers to
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})


def token() -> str:
    """This session's token, made on first use (templates put it in every form)."""
    if FIELD not in session:
        session[FIELD] = secrets.token_urlsafe(32)
    return str(session[FIELD])


def check() -> None:
    """Refuse a POST whose form does not carry this session's token (before any work is done)."""
    if request.method != "POST":
        return
    expected = session.get(FIELD)
    sent = request.form.get(FIELD, "")
    if not expected or not secrets.compare_digest(str(expected), sent):
        abort(403, "the form's security token is missing or stale; reload the page and try again")


def check_host() -> None:
    """Refuse a request to a loopback gallery addressed to any other name (DNS rebinding)."""
    host = request.host.rsplit(":", 1)[0].strip("[]")  # "127.0.0.1:8765", "[::1]:8765"
    if request.server and request.server[0] in LOOPBACK and host not in LOOPBACK:
        abort(403, f"this gallery answers only to 127.0.0.1 and localhost, not {host!r}")

"""A per-session random token that every state-changing request must carry.

Why: the gallery installs and removes files on this machine, and a page on any other site could
make the browser POST to ``127.0.0.1``. Such a page cannot read this one, so it cannot know the
token kept in the (signed, same-site) session cookie and echoed in every form.
"""

from __future__ import annotations

import secrets

from flask import abort, request, session

FIELD = "csrf"


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

"""The gallery's Flask application: routes over :mod:`tireg.serve.pages` and the registry.

Safe by default: every POST carries the session's CSRF token (:mod:`tireg.serve.csrf`);
pictures are served by catalogue id only (:mod:`tireg.serve.pictures`); static files come from
the package through Flask's own safe join, which lists no directory; and every failure is one
line, a :class:`~tireg.errors.TiregError` in the very words the CLI prints, never a traceback.
"""

from __future__ import annotations

import gc
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from flask import Flask, abort, flash, redirect, render_template, request, send_file, url_for
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException

from tireg.db.schema import EmbeddingRow, InstallRow
from tireg.db.session import Catalogue
from tireg.errors import TiregError
from tireg.registry import install, naming
from tireg.registry.naming import NotFoundError
from tireg.serve import csrf, pages, pictures, targets


def create_app(catalogue: Catalogue, ui_roots: Mapping[str, Path] | None = None) -> Flask:
    """The gallery over ``catalogue``; ``ui_roots`` fixes a UI's root (``--ui-root UI=PATH``),
    other UIs are looked for where ``tireg install`` looks."""
    app = Flask(__name__)
    # a new key per run: sessions (and their CSRF tokens) never outlive the server
    app.secret_key = secrets.token_bytes(32)
    app.config.update(SESSION_COOKIE_SAMESITE="Strict", SESSION_COOKIE_HTTPONLY=True)
    roots = dict(ui_roots or {})
    app.jinja_env.globals["csrf_token"] = csrf.token
    app.before_request(csrf.check_host)
    app.before_request(csrf.check)

    @app.errorhandler(TiregError)
    def tireg_error(exc: TiregError) -> ResponseReturnValue:
        status = 404 if isinstance(exc, NotFoundError) else 400
        return render_template("error.html", message=str(exc)), status

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> ResponseReturnValue:
        line = f"{exc.name}: {exc.description}"
        return render_template("error.html", message=line), exc.code or 500

    @app.get("/")
    def gallery() -> ResponseReturnValue:
        wanted = pages.GalleryQuery.from_args(request.args)
        with catalogue.reading() as session:
            page = pages.gallery(session, wanted)
        links = CardLinks(wanted)
        return render_template("gallery.html", page=page, families=pages.FAMILIES, links=links)

    @app.get("/e/<int:row_id>")
    def embedding(row_id: int) -> ResponseReturnValue:
        page = pages.embedding_page(catalogue, row_id, targets.detected(roots))
        return render_template("embedding.html", page=page)

    @app.get("/ref")
    def by_ref() -> ResponseReturnValue:
        """An embedding named by the naming rule (neighbours and versions link by ref)."""
        with catalogue.reading() as session:
            row = naming.resolve(session, request.args.get("spec", ""))
        return redirect(url_for("embedding", row_id=row.id))

    @app.post("/e/<int:row_id>/install")
    def install_into(row_id: int) -> ResponseReturnValue:
        ui = request.form.get("ui", "")
        found = {t.ui: t for t in targets.detected(roots)}
        if ui not in found:
            abort(400, f"no {ui or 'UI'} install was found on this machine")
        with catalogue.reading() as session:
            row = session.get(EmbeddingRow, row_id)
            if row is None:
                abort(404)
        dest = install.Destination.ui(ui, found[ui].root)
        for done in install.install_rows(catalogue, [row], dest):
            flash(f"{done.status}: {done.path} (type {done.prompt})")
        return redirect(url_for("embedding", row_id=row_id))

    @app.post("/e/<int:row_id>/uninstall")
    def uninstall_from(row_id: int) -> ResponseReturnValue:
        install_id = request.form.get("install", "")
        with catalogue.reading() as session:
            row = session.get(InstallRow, int(install_id)) if install_id.isdigit() else None
            if row is None or row.embedding_id != row_id:
                abort(404)
            ref = naming.ref_of(row.embedding)
        for done in install.uninstall_rows(catalogue, [row], refs={row_id: ref}):
            flash(f"{done.status}: {done.path}")
        return redirect(url_for("embedding", row_id=row_id))

    @app.get("/preview/<int:preview_id>")
    def preview(preview_id: int) -> ResponseReturnValue:
        with catalogue.reading() as session:
            return _picture(pictures.preview_file(session, preview_id))

    @app.get("/thumb/<int:preview_id>")
    def thumb(preview_id: int) -> ResponseReturnValue:
        with catalogue.reading() as session:
            return _thumbnail_of(pictures.preview_file(session, preview_id))

    @app.get("/grid/<int:run_id>")
    def grid(run_id: int) -> ResponseReturnValue:
        with catalogue.reading() as session:
            return _picture(pictures.grid_file(session, run_id))

    @app.get("/grid/<int:run_id>/thumb")
    def grid_thumb(run_id: int) -> ResponseReturnValue:
        with catalogue.reading() as session:
            return _thumbnail_of(pictures.grid_file(session, run_id))

    return app


def settle(app: Flask) -> None:
    """Before serving: compile the templates, then set every object alive now outside the
    garbage collector's reach (``gc.freeze``).

    Why: a page of cards allocates thousands of objects (ORM rows, template output), so now
    and then Python's oldest-generation collection runs, and it walks every object alive,
    modules, SQLAlchemy's mappers and compiled templates included: 40 to 65 ms at 100,000
    entries, the whole difference between a page's median and its 99th percentile. What is
    alive when the server starts lives as long as it does, so no collection needs to look at
    it; what requests allocate is collected as before. Only ``tireg serve`` (and the bench)
    call this: a process that goes on to do other things would keep what it froze.
    """
    for name in app.jinja_env.list_templates(extensions=["html"]):
        app.jinja_env.get_template(name)
    gc.collect()
    gc.freeze()


#: an id no catalogue row has, where a URL built once holds the place of every card's id
_PLACEHOLDER = 987654321012345


class CardLinks:
    """The links of a gallery page's cards, each route built once per page.

    Why: Werkzeug builds a URL in about 20 microseconds, and a page of 100 cards links each
    card, its picture and each of its tags: 350 builds, half of the page's time. Each route is
    built once with a placeholder id (or, for tags, the page's query without its tag) and
    every card's link is that text with its own id (or tag) put in.
    """

    def __init__(self, wanted: pages.GalleryQuery) -> None:
        self._routes: dict[str, tuple[str, str]] = {}
        self._tag_base = url_for("gallery", **wanted.link(tag=None, page=1))
        self._tags: dict[str, str] = {}

    def _route(self, endpoint: str, key: str, value: int) -> str:
        if endpoint not in self._routes:
            values: dict[str, Any] = {key: _PLACEHOLDER}
            built = url_for(endpoint, **values)
            before, _, after = built.partition(str(_PLACEHOLDER))
            self._routes[endpoint] = (before, after)
        before, after = self._routes[endpoint]
        return f"{before}{value}{after}"

    def embedding(self, row_id: int) -> str:
        return self._route("embedding", "row_id", row_id)

    def thumb(self, preview_id: int) -> str:
        return self._route("thumb", "preview_id", preview_id)

    def grid_thumb(self, run_id: int) -> str:
        return self._route("grid_thumb", "run_id", run_id)

    def tag(self, tag: str) -> str:
        """The gallery as it is but for the tag filter, which becomes ``tag``, on page 1."""
        if tag not in self._tags:
            joiner = "&" if "?" in self._tag_base else "?"
            self._tags[tag] = f"{self._tag_base}{joiner}{urlencode({'tag': tag})}"
        return self._tags[tag]


def _picture(path: Path | None) -> ResponseReturnValue:
    """A recorded picture as it is, or 404."""
    if path is None:
        abort(404)
    return send_file(path, mimetype=pictures.MEDIA_TYPES[path.suffix.lower()])


def _thumbnail_of(path: Path | None) -> ResponseReturnValue:
    """The cached thumbnail of a recorded picture (made on first use), or 404."""
    made = pictures.thumbnail(path) if path is not None else None
    if made is None:
        abort(404)
    return send_file(made, mimetype="image/jpeg", max_age=3600)

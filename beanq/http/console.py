"""The web console's pages: the single page at ``/``, its static files, login and logout.

The console is one HTML page, a script and a style sheet from ``beanq/http/static/`` (read
once, served from memory: no CDN, works offline), which draws every view from the JSON API.
With a token file, ``/`` sends a browser without a session to ``/login``, whose form takes the
token and sets the session cookie (see ``beanq.http.auth``). The login page and the static
files are open: they are the same for every install and hold nothing of the queue.
"""

from __future__ import annotations

import hashlib
import html
from importlib import resources
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from beanq.http.auth import COOKIE, SESSION_SECONDS, Gate, csrf_problem, same_origin

_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
}
MAX_FORM = 4096


def _load() -> dict[str, bytes]:
    folder = resources.files("beanq.http").joinpath("static")
    return {f.name: f.read_bytes() for f in folder.iterdir() if f.is_file()}


def routes(gate: Gate) -> list[Route]:
    files = _load()
    etags = {name: hashlib.sha256(data).hexdigest()[:16] for name, data in files.items()}
    index = files["index.html"]
    login_page = files["login.html"].decode()

    async def console(request: Request) -> Response:
        if gate.access(request) is None:
            return RedirectResponse("/login", status_code=303)
        return Response(index, media_type=_TYPES[".html"], headers={"Cache-Control": "no-store"})

    async def static(request: Request) -> Response:
        name: str = request.path_params["file"]
        data = files.get(name)
        if data is None or name == "index.html" or name == "login.html":
            return JSONResponse({"error": "not_found", "message": "no such file"}, 404)
        etag = f'"{etags[name]}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        suffix = name[name.rfind(".") :]
        return Response(
            data, media_type=_TYPES.get(suffix, "application/octet-stream"), headers=headers
        )

    def login_form(message: str = "", status: int = 200) -> Response:
        note = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
        return HTMLResponse(
            login_page.replace("<!--message-->", note),
            status_code=status,
            headers={"Cache-Control": "no-store"},
        )

    async def login(request: Request) -> Response:
        if gate.open:
            return RedirectResponse("/", status_code=303)
        if request.method == "GET":
            return login_form()
        if not same_origin(request):
            return login_form("This form must be sent from this server's own page.", 403)
        body = await request.body()
        if len(body) > MAX_FORM:
            return login_form("The form is too large.", 413)
        given = parse_qs(body.decode(errors="replace")).get("token", [""])[0]
        if not gate.check_token(given):
            return login_form("Wrong token.", 401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            gate.login(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(request: Request) -> Response:
        access = gate.access(request)
        if access is not None and access.session is not None:
            problem = csrf_problem(request, access.csrf)
            if problem is not None:
                return JSONResponse({"error": "forbidden", "message": problem}, 403)
            gate.logout(access.session)
        response = JSONResponse({"status": "logged out"})
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    return [
        Route("/", console),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/static/{file}", static),
    ]

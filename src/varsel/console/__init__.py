"""The web console at /console: server-rendered pages (Jinja2, autoescaped) with htmx for partial updates, served by
the API process. Every script, style and font is in static/ (htmx, uPlot, console.css); nothing comes from a CDN.

How to add a page
-----------------
1. A module with a router: ``router = APIRouter(prefix=f"{PREFIX}/orders", include_in_schema=False)``
   (``from varsel.console.web import PREFIX, render``), and add the router to ``ROUTERS`` in ``console/mount.py``.
   Paths arrive lowercased (the API's RouteSpellingMiddleware): keep route paths lowercase, and take path
   parameters as ``str`` and parse them yourself (a FastAPI-typed parameter that fails answers a JSON problem,
   not a page); raise ``ConsoleNotFound`` for what does not parse.
2. Each route takes the principal: ``principal: Principal = Depends(signed_in)`` (org or admin) or
   ``Depends(admin_only)`` (an org session gets the console's 404, as for a page that does not exist), both from
   ``varsel.console.sessions``. Without a valid session a GET goes to the sign-in page.
3. Tenancy: an org sees and acts on its own orders only. Filter reads by ``principal.org`` unless
   ``principal.admin``, and answer another org's order with ``raise ConsoleNotFound()`` (never 403: whether it
   exists is not the org's business). ``principal.may_see(creator)`` says it for one row.
4. Templates go in ``templates/`` and extend ``base.html`` (``{% block title %}``, ``{% block content %}``,
   ``{% block head %}`` for a page's own stylesheet or script file). ``render(request, "page.html", {...})``
   gives them ``principal``, ``navigation``, ``path``, ``csrf_field()`` and ``static_url(name)``. For an htmx
   partial update render a fragment template (no ``extends``) when ``"hx-request" in request.headers``.
5. State-changing requests are POST forms carrying ``{{ csrf_field() }}``; the route takes
   ``form: FormData = Depends(checked_form)``, which refuses (403 page) a missing or wrong token and a form posted
   from another origin. With htmx: ``<form method="post" action="…" hx-post="…" hx-target="#…">`` (it works
   without JavaScript too; answer a plain POST with a 303 redirect). htmx also sends the token as X-CSRF-Token
   with each request (hx-headers on base.html's body), so an ``hx-post`` outside a form passes the check too.
6. No inline ``<script>``, ``style=""`` or ``on…=`` handlers: the Content-Security-Policy (see web.py) allows
   scripts and styles from /console/static only. Put page code in a static .js file and pass data through
   ``data-`` attributes or a ``<script type="application/json">`` block read by that file. Charts: uPlot
   (static/uplot.iife.min.js and uplot.min.css, MIT).
7. Personal data (identity numbers, addresses) only on the pages that are about it, and never in a URL (forms
   post them).
8. Errors: raise ``ConsoleNotFound`` / ``ConsoleForbidden`` / ``ConsoleError(message)``; they become HTML pages.

Sign-in: one-time links (``varsel console login --org ORG`` / ``--admin``, sign_in.py) and OpenID Connect
(oidc.py); sessions are signed cookies (sessions.py).
"""

"""HTML for signing in and out, for refusals, and for the audit log. Every value
goes through :func:`h`."""

from __future__ import annotations

from collections.abc import Sequence

from .._redis.audit import AuditRecord
from .._redis.history import iso
from .auth import Principal
from .pages import h
from .web import local_path


def user_box(who: Principal | None, csrf: str, open_mode: bool) -> str:
    """Who is signed in, and a sign-out button (nothing on a dashboard without tokens)."""
    if who is None or open_mode:
        return ""
    return (f'<span class="user" id="who" data-role="{h(who.role)}">{h(who.name)} '
            f'<span class="muted">({h(who.role)})</span></span>'
            '<form class="inline" method="post" action="/logout">'
            '<button type="submit" id="sign-out">Sign out</button></form>')


def login_page(*, bad: bool = False, wait: float = 0.0, expired: bool = False,
               signed_out: bool = False, nxt: str = "") -> str:
    note = ""
    if bad:
        note = ('<p class="err-text" id="login-error">That token is not valid. '
                + (f"Wait {wait:.0f} s before the next try.</p>" if wait >= 1 else "</p>"))
    elif expired:
        note = '<p class="muted" id="login-note">Your session has ended: sign in again.</p>'
    elif signed_out:
        note = '<p class="muted" id="login-note">Signed out.</p>'
    keep = local_path(nxt, "")
    return (
        "<h1>Sign in</h1><p>This dashboard needs an access token.</p>" + note
        + '<form method="post" action="/login" class="filters" id="login">'
        f'<input type="hidden" name="next" value="{h(keep)}">'
        '<label>Token<input type="password" name="token" autocomplete="current-password" '
        'autofocus size="40" required></label>'
        '<button type="submit" class="primary">Sign in</button></form>'
    )


def error_page(status: int, message: str) -> str:
    head = {400: "Bad request", 401: "Sign in first", 403: "Not allowed", 404: "Not found",
            405: "Method not allowed", 413: "Too large", 429: "Too many tries"}.get(
        status, "Error")
    extra = ""
    if status == 401:
        extra = '<p><a href="/login">Sign in</a></p>'
    return (f'<h1>{h(head)}</h1><p class="err-text" id="error-text">{h(message)}</p>{extra}'
            '<p><a href="/overview">back to the overview</a></p>')


def _target_link(t: str) -> str:
    # Run and event ids are 26 upper-case letters and digits; function keys have a colon.
    if ":" in t:
        return f'<a class="mono" href="/runs?fn={h(t)}">{h(t)}</a>'
    return f'<span class="mono">{h(t)}</span>'


def audit_rows(records: Sequence[AuditRecord]) -> str:
    rows = []
    for r in records:
        shown = " ".join(_target_link(t) for t in r.targets[:6])
        more = f" and {len(r.targets) - 6} more" if len(r.targets) > 6 else ""
        rows.append(
            f'<tr data-action="{h(r.action)}" data-who="{h(r.who)}">'
            f'<td><time datetime="{h(iso(r.at))}" data-rel>{h(iso(r.at))}</time></td>'
            f'<td class="who">{h(r.who)} <span class="muted">({h(r.role)})</span></td>'
            f"<td>{h(r.action)}</td><td>{shown}{h(more)}</td><td>{h(r.detail)}</td>"
            f'<td class="mono muted">{h(r.client)}</td></tr>')
    return "".join(rows)


def _table(records: Sequence[AuditRecord], ident: str) -> str:
    return (f'<table id="{h(ident)}" class="audit"><thead><tr><th>When</th><th>Who</th>'
            "<th>Action</th><th>On</th><th>What happened</th><th>From</th></tr></thead><tbody>"
            + (audit_rows(records) or '<tr><td colspan="6" class="muted">nothing yet</td></tr>')
            + "</tbody></table>")


def audit_page(records: Sequence[AuditRecord], offset: int, total: int) -> str:
    more = ""
    if offset + len(records) < total:
        more = f'<div class="pager"><a href="/audit?offset={offset + len(records)}">older →</a></div>'
    return ("<h1>Audit</h1><p class=\"muted\">Every action taken from the dashboard, newest "
            f"first, with the name of the token that took it ({total} kept).</p>"
            + _table(records, "audit") + more)


def audit_section(records: Sequence[AuditRecord], title: str) -> str:
    if not records:
        return ""
    return f"<h2>{h(title)}</h2>" + _table(records, "target-audit")

"""The status page as HTML: one self-contained document (inline CSS and SVG, no script, no external
resource), so it works offline and with JavaScript off.

Every value shown goes through :func:`_e` (HTML escaping, quotes included): contact names, e-mail
addresses and errors are untrusted text scraped from websites.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from html import escape
from urllib.parse import quote

from .history import AttemptRecord, HourlyOutcome, RunRecord
from .queue import CircuitState, ContactState, FailureReason
from .status import SyncStatus
from .status_view import ContactView, CrmOverview, StatusPage

__all__ = ["render"]

_CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2933;
background:#f4f6f8}
header{background:#1f2933;color:#fff;padding:12px 24px;display:flex;align-items:center;gap:24px;
flex-wrap:wrap}
header h1{font-size:18px;margin:0;font-weight:600}
header .when{color:#cbd2d9;font-size:12px}
header form{margin-left:auto;display:flex;gap:6px}
header input{padding:5px 8px;border-radius:4px;border:0;min-width:280px}
main{padding:16px 24px;max-width:1280px;margin:0 auto}
.notice{background:#e3f8ec;border:1px solid #8bd3a8;padding:8px 12px;border-radius:6px;margin-bottom:12px}
.note{color:#616e7c;font-size:12px}
.stopped{background:#fde8e8;border:1px solid #f0b4b4;color:#8a1c1c;padding:6px 10px;border-radius:6px}
section.crm{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:14px 18px;
margin-bottom:16px}
section.crm h2{margin:0 0 10px;font-size:17px;display:flex;align-items:center;gap:10px}
.badge{font-size:12px;font-weight:600;padding:2px 8px;border-radius:10px;background:#e3f8ec;
color:#18794e}
.badge.paused{background:#fde8e8;color:#b42318}
.tiles{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:10px}
.tile{border:1px solid #d9e2ec;border-radius:6px;padding:6px 10px;min-width:86px}
.tile b{display:block;font-size:18px}
.tile span{font-size:11px;text-transform:uppercase;letter-spacing:.04em;color:#616e7c}
.tile.error.some b{color:#b42318}.tile.complete.some b{color:#18794e}.tile.due.some b{color:#1d4ed8}
.tile.retrying.some b,.tile.stale.some b{color:#b7791f}
.grid{display:grid;grid-template-columns:minmax(300px,1fr) minmax(300px,1.4fr);gap:16px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
h3{font-size:13px;margin:12px 0 6px;color:#3e4c59;text-transform:uppercase;letter-spacing:.04em}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eef2f6;vertical-align:top}
th{color:#616e7c;font-weight:600}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.reason{word-break:break-word}
.examples{color:#616e7c;font-size:12px}
button{font:inherit;font-size:12px;padding:3px 10px;border-radius:4px;border:1px solid #9aa5b1;
background:#fff;cursor:pointer}
button.danger{border-color:#e0a3a3;color:#b42318}
form.inline{display:inline}
.actions{display:flex;gap:8px;align-items:center;margin-top:10px;flex-wrap:wrap}
.actions input{padding:3px 6px;border:1px solid #cbd2d9;border-radius:4px;min-width:220px}
svg.chart{display:block;max-width:100%}
.legend{font-size:11px;color:#616e7c}
.legend i{display:inline-block;width:9px;height:9px;margin:0 4px 0 10px;border-radius:2px}
.contact{background:#fff;border:1px solid #d9e2ec;border-radius:8px;padding:12px 18px;
margin-bottom:16px}
"""

_SYNCED = "#3ba776"
_FAILED = "#d64545"


def _e(value: object) -> str:
    """``value`` as HTML text: escaped, quotes included (safe in text and in attribute values)."""
    return escape("" if value is None else str(value), quote=True)


def _when(moment: datetime | None) -> str:
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


def render(page: StatusPage) -> str:
    """The whole document."""
    base = page.base
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>crmsync status</title>",
        # No favicon request: the page loads nothing but itself.
        '<link rel="icon" href="data:,">',
        # No script, no external resource: nothing to load but this document.
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:; form-action 'self'\">",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>crmsync status</h1>",
        f'<span class="when">as of {_e(_when(page.now))}</span>',
        f'<form method="get" action="{_e(base)}" role="search">',
        '<input type="search" name="contact" placeholder="contact id or e-mail address" '
        f'aria-label="contact id or e-mail address" value="{_e(page.query or "")}">',
        "<button type=submit>Look up</button></form></header><main>",
    ]
    if page.notice:
        parts.append(f'<div class="notice" role="status">{_e(page.notice)}</div>')
    if page.query is not None:
        parts.append(_lookup(page))
    if not page.history:
        parts.append(
            '<p class="note">This store keeps no run history: recent runs, attempts and the '
            "24-hour chart appear once it does.</p>"
        )
    parts.extend(_crm(overview, base) for overview in page.crms)
    parts.append("</main></body></html>")
    return "\n".join(parts)


# -- one CRM -----------------------------------------------------------------------------------------


def _crm(view: CrmOverview, base: str) -> str:
    s = view.summary
    crm = view.crm
    action = f"{_e(base)}/{_e(quote(crm, safe=''))}"
    badge = _badge(view.paused, s.counts.get(SyncStatus.ERROR, 0))
    tiles = [
        _tile(status.value, s.counts.get(status, 0), status.value.lower()) for status in SyncStatus
    ]
    tiles.append(_tile("total", s.total, "total"))
    tiles.append(_tile("due now", s.due, "due"))
    tiles.append(_tile("retrying", s.retrying, "retrying"))
    if s.out_of_date is not None:
        # Change detection: Complete contacts changed since their last delivery (``sync --changed``).
        tiles.append(_tile("out of date", s.out_of_date, "stale"))
    oldest = "" if s.oldest_due_seconds is None else _duration(s.oldest_due_seconds)
    return "\n".join(
        [
            f'<section class="crm" id="crm-{_e(crm)}" data-crm="{_e(crm)}">',
            f"<h2>{_e(crm)} {badge}</h2>",
            _pause_line(view.paused),
            _stopped_line(view.runs),
            f'<div class="tiles">{"".join(tiles)}</div>',
            f'<p class="note">longest wait of a due contact: {_e(oldest)}</p>' if oldest else "",
            '<div class="grid"><div>',
            "<h3>Last 24 hours</h3>",
            _chart(view.hours),
            "<h3>Most common failure reasons</h3>",
            _reasons(view.reasons, action),
            "</div><div><h3>Recent runs</h3>",
            _runs(view.runs),
            "</div></div>",
            _pause_form(view.paused, action),
            "</section>",
        ]
    )


def _badge(paused: CircuitState | None, errors: int) -> str:
    if paused is not None:
        who = (
            "paused by a user" if paused.paused_by_user is not None else "paused (circuit breaker)"
        )
        return f'<span class="badge paused">{who}</span>'
    if errors:
        return f'<span class="badge">active, {errors:,} in Error</span>'
    return '<span class="badge">active</span>'


def _pause_line(paused: CircuitState | None) -> str:
    if paused is None:
        return ""
    if paused.paused_by_user is not None:
        return (
            f'<p class="note paused-reason">Paused by a user since {_e(_when(paused.opened_at))}: '
            f"{_e(paused.paused_by_user)}. Runs stop at once; contacts stay queued.</p>"
        )
    return (
        f'<p class="note paused-reason">Paused by the circuit breaker since '
        f"{_e(_when(paused.opened_at))} after repeated connection errors, timeouts or 5xx; "
        f"next probe at {_e(_when(paused.probe_at))}.</p>"
    )


def _stopped_line(runs: list[RunRecord]) -> str:
    """The latest run's fatal error (a bad key, an unknown list), with what to fix, in plain sight."""
    if not runs or not runs[0].stopped_reason:
        return ""
    return (
        f'<p class="stopped">The last run stopped at {_e(_when(runs[0].finished_at))}: '
        f"{_e(runs[0].stopped_reason)}</p>"
    )


def _pause_form(paused: CircuitState | None, action: str) -> str:
    if paused is not None:
        return (
            f'<div class="actions"><form class="inline" method="post" action="{action}/resume">'
            '<button type="submit" name="resume">Resume</button></form></div>'
        )
    return (
        f'<div class="actions"><form class="inline" method="post" action="{action}/pause">'
        '<input name="reason" maxlength="300" placeholder="why (shown with the pause)" '
        'aria-label="why pause">'
        ' <button type="submit" class="danger" name="pause">Pause</button></form></div>'
    )


def _tile(label: str, value: int, kind: str) -> str:
    return (
        f'<div class="tile {_e(kind)}{" some" if value else ""}" data-count="{_e(label)}">'
        f"<b>{value:,}</b><span>{_e(label)}</span></div>"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _chart(hours: list[HourlyOutcome]) -> str:
    """Synced (green) and failed (red) attempts per hour as stacked bars, with a title per bar."""
    width, height, gap = 12, 64, 2
    top = max([h.synced + h.failed for h in hours] + [1])
    bars = []
    for n, hour in enumerate(hours):
        x = n * width
        synced_h = round(hour.synced / top * height, 1)
        failed_h = round(hour.failed / top * height, 1)
        label = f"{hour.hour:%H}:00 UTC: {hour.synced} synced, {hour.failed} failed"
        bars.append(
            f"<g><title>{_e(label)}</title>"
            f'<rect x="{x}" y="0" width="{width - gap}" height="{height}" fill="#f4f6f8"/>'
            f'<rect x="{x}" y="{height - synced_h}" width="{width - gap}" height="{synced_h}" '
            f'fill="{_SYNCED}"/>'
            f'<rect x="{x}" y="{height - synced_h - failed_h}" width="{width - gap}" '
            f'height="{failed_h}" fill="{_FAILED}"/></g>'
        )
    total_synced = sum(h.synced for h in hours)
    total_failed = sum(h.failed for h in hours)
    first = f"{hours[0].hour:%H}:00" if hours else ""
    return (
        f'<svg class="chart" role="img" width="{len(hours) * width}" height="{height + 14}" '
        f'viewBox="0 0 {len(hours) * width} {height + 14}" '
        f'aria-label="{total_synced} synced and {total_failed} failed in the last 24 hours">'
        + "".join(bars)
        + f'<text x="0" y="{height + 12}" font-size="10" fill="#616e7c">{_e(first)}</text>'
        f'<text x="{len(hours) * width}" y="{height + 12}" font-size="10" fill="#616e7c" '
        'text-anchor="end">now</text></svg>'
        f'<div class="legend"><i style="background:{_SYNCED}"></i>{total_synced:,} synced'
        f'<i style="background:{_FAILED}"></i>{total_failed:,} failed for good</div>'
    )


def _reasons(reasons: list[FailureReason], action: str) -> str:
    if not reasons:
        return '<p class="note">No contact in Error.</p>'
    rows = []
    for reason in reasons:
        examples = ", ".join(
            _e(c.email or c.name or c.id) + (f" ({_e(c.name)})" if c.name and c.email else "")
            for c in reason.examples
        )
        hidden = (
            '<input type="hidden" name="no_reason" value="1">'
            if reason.reason is None
            else f'<input type="hidden" name="reason" value="{_e(reason.reason)}">'
        )
        rows.append(
            f'<tr class="failure"><td class="num">{reason.count:,}</td>'
            f'<td class="reason">{_e(reason.reason or "(no reason recorded)")}'
            f'<div class="examples">e.g. {examples}</div></td>'
            f'<td><form class="inline" method="post" action="{action}/retry">{hidden}'
            '<button type="submit" name="retry">Retry</button></form></td></tr>'
        )
    return (
        '<table><thead><tr><th class="num">contacts</th><th>reason</th><th></th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _runs(runs: list[RunRecord]) -> str:
    if not runs:
        return '<p class="note">No run recorded.</p>'
    rows = []
    for run in runs:
        outcome = run.stopped_reason or run.paused_reason or ("running" if run.running else "")
        rows.append(
            f"<tr><td>{_e(f'{run.started_at:%m-%d %H:%M:%S}')}</td>"
            f'<td class="num">{run.synced:,}</td><td class="num">{run.failed:,}</td>'
            f'<td class="num">{run.retrying:,}</td><td class="num">{run.skipped:,}</td>'
            f'<td class="num">{run.contacts_per_second:,.1f}</td>'
            f'<td class="num">{run.rate_limited_seconds:,.0f}</td>'
            f'<td class="reason">{_e(outcome)}</td></tr>'
        )
    return (
        "<table><thead><tr><th>started (UTC)</th><th class=num>synced</th>"
        "<th class=num>failed</th><th class=num>retrying</th><th class=num>skipped</th>"
        "<th class=num>per s</th><th class=num>rate-limited s</th><th>stopped</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


# -- the contact lookup ------------------------------------------------------------------------------


def _lookup(page: StatusPage) -> str:
    if not page.found:
        return (
            f'<div class="contact" id="lookup"><p>No contact has the id or e-mail address '
            f"<b>{_e(page.query)}</b>.</p></div>"
        )
    return "\n".join(_contact(view, page.base, page.history) for view in page.found)


def _contact(view: ContactView, base: str, history: bool) -> str:
    c = view.contact
    rows = [_state_row(crm, state, c.id, base) for crm, state in view.states.items()]
    parts = [
        f'<div class="contact" id="lookup" data-contact="{_e(c.id)}">',
        f"<h2>{_e(c.name or '(no name)')}</h2>",
        f'<p class="note">{_e(c.email or "(no e-mail address)")} · id {_e(c.id)}</p>',
        "<table><thead><tr><th>CRM</th><th>sync status</th><th>processing</th><th>error</th>"
        "<th>CRM id</th><th class=num>attempts</th><th>next attempt</th><th></th></tr></thead>",
        f"<tbody>{''.join(rows)}</tbody></table>",
    ]
    if history:
        parts.append("<h3>Attempts</h3>")
        parts.append(_attempts(view.attempts))
    parts.append("</div>")
    return "\n".join(parts)


def _state_row(crm: str, state: ContactState, contact_id: object, base: str) -> str:
    action = ""
    if state.sync_status in (SyncStatus.SELECTED, SyncStatus.QUEUED):
        action = (
            f'<form class="inline" method="post" action="{_e(base)}/{_e(quote(crm, safe=""))}'
            f'/unselect"><input type="hidden" name="contact_id" value="{_e(contact_id)}">'
            '<button type="submit" name="unselect">Unselect</button></form>'
        )
    processing = state.processing_status.value if state.processing_status else ""
    return (
        f'<tr data-crm="{_e(crm)}"><td>{_e(crm)}</td><td class="sync-status">'
        f"{_e(state.sync_status.value)}</td><td>{_e(processing)}</td>"
        f'<td class="reason">{_e(state.error or "")}</td><td>{_e(state.remote_id or "")}</td>'
        f'<td class="num">{state.attempts}</td><td>{_e(_when(state.next_attempt_at))}</td>'
        f"<td>{action}</td></tr>"
    )


def _attempts(attempts: Iterable[AttemptRecord]) -> str:
    rows = [
        f"<tr><td>{_e(_when(a.at))}</td><td>{_e(a.crm)}</td><td>{_e(a.outcome.value)}</td>"
        f'<td class="num">{_e(a.status_code or "")}</td><td class="reason">{_e(a.reason or "")}</td></tr>'
        for a in attempts
    ]
    if not rows:
        return '<p class="note">No attempt recorded.</p>'
    return (
        '<table class="attempts"><thead><tr><th>at</th><th>CRM</th><th>outcome</th>'
        "<th class=num>HTTP</th>"
        f"<th>reason</th></tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )

"""Rendering the sections: HTML through a Jinja2 template (shipped as package data), Markdown."""

from __future__ import annotations

import base64

from scoresde.report.sections import Section
from scoresde.report.tables import html_cells, md_table


def anchor(heading: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in heading.lower()).strip("-")


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    return Environment(loader=PackageLoader("scoresde.report", "templates"),
                       autoescape=select_autoescape(["html", "j2"]), undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)  # fmt: skip


def _html_block(kind: str, payload) -> dict:
    if kind == "table":
        return {"kind": kind, "table": html_cells(payload) if len(payload) else None}
    if kind == "figures":
        figs = [{"id": f["name"], "caption": f["caption"],
                 "src": "data:image/png;base64," + base64.b64encode(f["png"]).decode("ascii")}
                for f in payload]  # fmt: skip
        return {"kind": kind, "figures": figs}
    return {"kind": kind, "text": payload}


def render_html(sections: list[Section], title: str) -> str:
    """A self-contained page: CSS inline, figures embedded as base64 PNG."""
    view = [{"heading": s.heading, "anchor": anchor(s.heading) if s.heading else None,
             "blocks": [_html_block(k, p) for k, p in s.blocks]} for s in sections]  # fmt: skip
    return _environment().get_template("report.html.j2").render(title=title, sections=view)


def render_markdown(sections: list[Section], title: str, fig_rel: str) -> str:
    """Markdown with the figures linked as ``{fig_rel}/{name}.png``."""
    parts = [f"# {title}"]
    for section in sections:
        if section.heading:
            parts.append(f"## {section.heading}")
        for kind, payload in section.blocks:
            if kind == "table":
                parts.append(md_table(payload) if len(payload) else "(no data)")
            elif kind == "text":
                parts.append(payload)
            elif kind == "pre":
                parts.append(f"```yaml\n{payload}```")
            else:
                parts += [f"![{f['name']}]({fig_rel}/{f['path'].name})\n\n*{f['caption']}*"
                          for f in payload] or ["(no figures)"]  # fmt: skip
    return "\n\n".join(parts) + "\n"

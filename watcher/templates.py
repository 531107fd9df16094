"""Message templates: the placeholders a template may use, and the one check of a template.

Kept apart from ``notify`` (which loads apprise) so that ``settings`` can check
templates when a configuration loads, and ``check-config`` stays fast.
"""

from __future__ import annotations

import string
from collections.abc import Mapping

#: The names a ``notify.title`` / ``notify.body`` template may use (``{name}``).
PLACEHOLDERS = (
    "model_id",
    "name",
    "status",
    "status_label",
    "previous_status",
    "event_at",
    "previous_since",
    "time_in_previous",
    "duration",
    "base_model",
    "dashboard_url",
    "metrics",
)


class TemplateError(ValueError):
    """A message template cannot be rendered; ``problems`` has one line per fault."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def template_problems(template: str) -> list[str]:
    """What is wrong with ``template``: empty when it renders with every value a string."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        return [f"invalid template: {exc}"]
    problems: list[str] = []
    for _literal, field_name, spec, _conversion in parsed:
        if field_name is None:
            continue
        if field_name == "" or field_name.isdigit():
            problems.append("positional placeholders like {} or {0} are not allowed: use names")
        elif field_name not in PLACEHOLDERS:
            problems.append(
                f"unknown placeholder {{{field_name}}}; allowed: {', '.join(PLACEHOLDERS)}"
            )
        elif spec and "{" in spec:
            problems.append(
                f"placeholders inside a format spec are not allowed ({{{field_name}:{spec}}})"
            )
    if not problems:
        try:
            template.format_map(dict.fromkeys(PLACEHOLDERS, "x"))
        except (ValueError, TypeError) as exc:
            problems.append(f"invalid template: {exc}")
    return problems


def render_template(template: str, fields: Mapping[str, str]) -> str:
    """``template`` with its ``{placeholders}`` filled from ``fields``; ``TemplateError`` if bad."""
    problems = template_problems(template)
    if problems:
        raise TemplateError(problems)
    try:
        return template.format_map(fields)
    except (KeyError, ValueError, TypeError) as exc:
        raise TemplateError([f"cannot render template: {exc}"]) from None

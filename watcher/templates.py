"""Message templates: the placeholders a template may use, and the one check of a template.

The check refuses what would make one render expensive: a format width or precision
over ``MAX_FORMAT_WIDTH`` (``{name:>300000000}`` would build 300 MB per message).

Kept apart from ``notify`` (which loads apprise) so that ``settings`` can check
templates when a configuration loads, and ``check-config`` stays fast.
"""

from __future__ import annotations

import re
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
    "provider",
    "fine_tuned_model",
    "error_message",
)


#: The largest width or precision a format spec may ask for (``{name:<40}``): padding for
#: alignment, never megabytes per message.
MAX_FORMAT_WIDTH = 200

# Python's format-spec mini-language: [[fill]align][sign][z][#][0][width][,_][.precision][type]
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[,_]?(?:\.(?P<precision>\d+))?[a-zA-Z%]?",
    re.DOTALL,
)


def _spec_problem(field_name: str, spec: str) -> str | None:
    """Why ``{field_name:spec}`` is refused, or None (a width over ``MAX_FORMAT_WIDTH``)."""
    match = _FORMAT_SPEC.fullmatch(spec)
    if match is None:
        return None  # left for the trial render to reject
    for part in ("width", "precision"):
        digits = match.group(part)
        if digits is not None and (len(digits) > 6 or int(digits) > MAX_FORMAT_WIDTH):
            return f"{{{field_name}:{spec}}}: a format {part} may be at most {MAX_FORMAT_WIDTH}"
    return None


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
        elif spec and (problem := _spec_problem(field_name, spec)) is not None:
            problems.append(problem)
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

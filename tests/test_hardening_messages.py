"""Issue 11, findings 9 and 2 (notifications): outside text in a message is escaped for the
format it is sent in, bounded, and free of secrets.

A model name or status comes from an API (a discovered job's name, a status string) or
a person; in a notification it must stay one value: no forged line (text), no markup
(``format: html`` escapes title and body values, ``markdown`` escapes its
metacharacters), at most 200 characters (errors 1,000), and no registered secret.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from watcher.lifecycle import Notice
from watcher.messages import (
    Message,
    not_found_message,
    render_notice,
    stuck_message,
    unreachable_message,
)
from watcher.providers.cohere import COHERE_SCHEME, FINETUNING, READY
from watcher.redact import SECRETS

FORGED = "FORGED: Status: ready"
LINK_NAME = "[click](http://evil.example/x)"
HTML_NAME = '<img src=x onerror="alert(1)">'
ANSI = "\x1b[2J\x1b[31m"
API_KEY = "sk-MESSAGE-KEY-0123456789"
NOW = datetime(2026, 1, 1, 12, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _registered_key() -> Iterator[None]:
    SECRETS.clear()
    SECRETS.add(API_KEY)
    yield
    SECRETS.clear()


def notice(status: str = READY, model_id: str = "ft-1") -> Notice:
    return Notice(model_id, status, FINETUNING, NOW, NOW, NOW)


def render(name: str, body_format: str, *, status: str = READY, **templates: str) -> Message:
    return render_notice(
        notice(status),
        name=name,
        dashboard_url="https://dashboard.example/{model_id}",
        scheme=COHERE_SCHEME,
        provider_title="Cohere",
        body_format=body_format,
        title_template=templates.get("title"),
        body_template=templates.get("body"),
    )


def lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("<br>", "\n").splitlines()]


class TestText:
    def test_a_newline_in_a_name_forges_no_line_and_escapes_are_removed(self) -> None:
        message = render(f"legit{ANSI}\n{FORGED}", "text")
        for part in (message.title, message.body):
            assert "\x1b" not in part
            assert not any(line.startswith(FORGED) for line in lines(part)), part
        assert "\n" not in message.title

    def test_values_are_capped(self) -> None:
        message = render("N" * 10_000, "text", status="STATUS_" + "X" * 10_000)
        assert len(message.title) < 500, len(message.title)
        assert "N" * 201 not in message.body
        assert "X" * 201 not in message.body
        assert "…" in message.body

    def test_a_registered_secret_in_a_value_is_masked(self) -> None:
        message = render(f"model {API_KEY}", "text")
        assert API_KEY not in message.title + message.body


class TestHtml:
    def test_title_and_body_values_are_escaped(self) -> None:
        message = render(HTML_NAME, "html")
        assert "<img" not in message.title
        assert "&lt;img" in message.title
        assert "<img" not in message.body
        assert "&lt;img" in message.body

    def test_a_template_title_is_escaped_too(self) -> None:
        message = render(HTML_NAME, "html", title="Done: {name}", body="<b>{name}</b>")
        assert message.title == "Done: " + "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;"
        assert message.body.startswith("<b>&lt;img")  # the template's own markup stays


class TestMarkdown:
    def test_a_link_in_a_name_is_no_link(self) -> None:
        message = render(LINK_NAME, "markdown")
        for part in (message.title, message.body):
            assert "[click](http" not in part, part
            assert r"\[click\]\(http" in part, part

    def test_a_template_keeps_its_own_markdown(self) -> None:
        message = render(LINK_NAME, "markdown", body="**{name}** is ready")
        assert message.body.startswith("**\\[click\\]")
        assert message.body.endswith("** is ready")


class TestOpsReports:
    def test_unreachable_error_is_one_clean_bounded_line_without_secrets(self) -> None:
        error = f"HTTP 502: Authorization: Bearer {API_KEY}{ANSI}\n{FORGED}" + "E" * 5_000
        message = unreachable_message("Cohere", 1800, error)
        assert API_KEY not in message.body
        assert "\x1b" not in message.body
        assert "\n" not in message.body
        assert len(message.body) < 1_200

    def test_not_found_and_stuck_reports_clean_their_values(self) -> None:
        hostile = f"{ANSI}name\n{FORGED}"
        reports = [
            not_found_message(hostile, hostile, "Cohere"),
            stuck_message(
                label=hostile,
                model_id=hostile,
                status=hostile,
                status_since=NOW,
                now=NOW.replace(hour=15),
                scheme=COHERE_SCHEME,
                dashboard="https://dashboard.example/x",
            ),
        ]
        for report in reports:
            for part in (report.title, report.body):
                assert "\x1b" not in part, part
                assert "\n" not in part, part

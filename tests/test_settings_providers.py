"""Tests for the provider sections of watcher.settings (issue 10): one section per provider,
its key from its SDK's variable, required keys only for providers a model uses.

Real files only (written to tmp_path), loaded with an explicit environment.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from watcher.cli import main
from watcher.errors import EX_CONFIG, ConfigError
from watcher.lifecycle import ModelKey
from watcher.providers import PROVIDERS
from watcher.redact import SECRETS
from watcher.settings import (
    PROVIDER_NAMES,
    RESTART_ONLY_KEYS,
    AzureOpenAISettings,
    FireworksSettings,
    MistralSettings,
    OpenAISettings,
    ProviderSettings,
    Settings,
    TogetherSettings,
    load_settings,
    register_secrets,
    resolve_api_key,
    resolve_api_keys,
    restart_only_changes,
    section_name,
    summary_lines,
)

AZURE_URL = "https://res.openai.azure.com/openai/v1"

#: provider -> (its key variable, a models: entry using it, the section it needs).
USES: dict[str, tuple[str, str]] = {
    "openai": ("OPENAI_API_KEY", ""),
    "azure-openai": ("AZURE_OPENAI_API_KEY", f"azure_openai: {{base_url: {AZURE_URL}}}\n"),
    "mistral": ("MISTRAL_API_KEY", ""),
    "together": ("TOGETHER_API_KEY", ""),
    "fireworks": ("FIREWORKS_API_KEY", "fireworks: {account_id: acme}\n"),
}


@pytest.fixture(autouse=True)
def _clean_secrets() -> Iterator[None]:
    SECRETS.clear()
    yield
    SECRETS.clear()


def write(tmp_path: Path, text: str, name: str = "watcher.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={} if environ is None else environ)
    return info.value.problems


def config_for(provider: str) -> str:
    return USES[provider][1] + f"models:\n  - {{id: job-1, provider: {provider}}}\n"


class TestRegistry:
    def test_every_provider_is_registered_with_a_section(self) -> None:
        """Six names, in the issue's order; each has its section and its class target."""
        assert PROVIDER_NAMES == (
            "cohere", "openai", "azure-openai", "mistral", "together", "fireworks"
        )  # fmt: skip
        settings = Settings(models=[{"id": "a"}])  # type: ignore[list-item]
        for name in PROVIDER_NAMES:
            assert isinstance(settings.provider_section(name), ProviderSettings)
            module, _, cls = PROVIDERS[name].target.partition(":")
            assert module == f"watcher.providers.{section_name(name)}"
            assert cls.endswith("Provider")
        assert section_name("azure-openai") == "azure_openai"
        with pytest.raises(KeyError):
            settings.provider_section("poll")

    @pytest.mark.parametrize(
        ("cls", "base_url", "variables"),
        [
            (OpenAISettings, "https://api.openai.com/v1", ("OPENAI_API_KEY",)),
            (AzureOpenAISettings, "", ("AZURE_OPENAI_API_KEY",)),
            (MistralSettings, "https://api.mistral.ai", ("MISTRAL_API_KEY",)),
            (TogetherSettings, "https://api.together.ai", ("TOGETHER_API_KEY",)),
            (FireworksSettings, "https://api.fireworks.ai", ("FIREWORKS_API_KEY",)),
        ],
    )
    def test_defaults_follow_each_sdk(
        self, cls: type[ProviderSettings], base_url: str, variables: tuple[str, ...]
    ) -> None:
        """Base URLs in each SDK's convention (only OpenAI's has /v1); the SDK's key variable."""
        section = cls.model_validate({})
        assert section.base_url == base_url
        assert cls.key_variables == variables
        assert section.timeout == 30.0
        assert section.max_requests_per_minute is None
        assert section.api_key_file is None

    def test_models_name_their_provider(self, tmp_path: Path) -> None:
        """Every provider name is accepted; ``azure_openai`` (the section's spelling) too."""
        path = write(
            tmp_path,
            f"azure_openai: {{base_url: {AZURE_URL}}}\nfireworks: {{account_id: acme}}\n"
            "models:\n  - {id: a, provider: openai}\n  - {id: a, provider: azure_openai}\n"
            "  - {id: b, provider: Azure-OpenAI}\n  - {id: c, provider: mistral}\n"
            "  - {id: d, provider: together}\n  - {id: e, provider: fireworks}\n  - f\n",
        )
        settings = load_settings(path, environ={})
        assert [m.key for m in settings.models] == [
            ModelKey("openai", "a"), ModelKey("azure-openai", "a"), ModelKey("azure-openai", "b"),
            ModelKey("mistral", "c"), ModelKey("together", "d"), ModelKey("fireworks", "e"),
            ModelKey("cohere", "f"),
        ]  # fmt: skip
        assert settings.providers_in_use() == (
            "openai", "azure-openai", "mistral", "together", "fireworks", "cohere"
        )  # fmt: skip


class TestKeys:
    @pytest.mark.parametrize("provider", list(USES))
    def test_key_from_the_sdk_variable(self, tmp_path: Path, provider: str) -> None:
        """Each provider reads its own SDK's variable, and no other provider's."""
        variable = USES[provider][0]
        settings = load_settings(write(tmp_path, config_for(provider)), environ={})
        keys = resolve_api_keys(settings, {variable: " sk-1 ", "CO_API_KEY": "co"})
        assert list(keys) == [provider]
        assert keys[provider].value.get_secret_value() == "sk-1"
        assert keys[provider].source == f"${variable}"

    @pytest.mark.parametrize("provider", list(USES))
    def test_missing_key_names_provider_and_variable(self, tmp_path: Path, provider: str) -> None:
        """No key: one problem line naming the provider, its variable and its section's file key."""
        settings = load_settings(write(tmp_path, config_for(provider)), environ={})
        with pytest.raises(ConfigError) as info:
            resolve_api_keys(settings, {"CO_API_KEY": "co", "OPENAI_API_KEY": " "})
        (line,) = info.value.problems
        variable = USES[provider][0]
        assert line.startswith(f"{provider}: no API key: set {variable}, ")
        assert f"{section_name(provider)}.api_key_file" in line
        assert info.value.exit_code == EX_CONFIG

    @pytest.mark.parametrize("provider", ["openai", "azure-openai", "fireworks"])
    def test_check_config_exits_78(
        self,
        tmp_path: Path,
        provider: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        """``check-config``, a model whose provider has no key: 78, provider and variable named."""
        for variable, _ in USES.values():
            monkeypatch.delenv(variable, raising=False)
        monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
        path = write(tmp_path, config_for(provider))
        assert main(["check-config", "-c", str(path)]) == EX_CONFIG
        err = capsys.readouterr().err
        assert provider in err
        assert USES[provider][0] in err
        assert "Traceback" not in err

    def test_unused_section_needs_no_key(self, tmp_path: Path) -> None:
        """A section for a provider no model uses is fine without its key (or its required keys)."""
        path = write(
            tmp_path,
            "openai: {organization: org-1}\nazure_openai: {timeout: 5}\nfireworks: {}\n"
            "mistral: null\nmodels: [a]\n",
        )
        settings = load_settings(path, environ={})
        assert list(resolve_api_keys(settings, {"CO_API_KEY": "co"})) == ["cohere"]
        assert settings.azure_openai.base_url == ""
        assert settings.fireworks.account_id is None

    def test_key_file_and_env_override_use_the_section_name(self, tmp_path: Path) -> None:
        """Labels name the section (``azure_openai``), never the key."""
        key_file = write(tmp_path, "sk-file\n", "key")
        path = write(
            tmp_path,
            f"openai: {{api_key_file: {key_file}}}\nazure_openai: {{base_url: {AZURE_URL}}}\n"
            "models:\n  - {id: a, provider: openai}\n  - {id: b, provider: azure-openai}\n",
        )
        environ = {"WATCHER_AZURE_OPENAI__API_KEY": "sk-azure"}
        settings = load_settings(path, environ=environ)
        keys = resolve_api_keys(settings, environ)
        assert keys["openai"].source == f"openai.api_key_file ({key_file})"
        assert keys["openai"].value.get_secret_value() == "sk-file"
        assert keys["azure-openai"].source == "$WATCHER_AZURE_OPENAI__API_KEY"
        assert resolve_api_key(settings, environ, provider="azure-openai").source == (
            "$WATCHER_AZURE_OPENAI__API_KEY"
        )
        lines = "\n".join(summary_lines(settings, keys))
        assert "sk-" not in lines
        # The summary shows the host only (redact_url).
        assert (
            "azure-openai: https://res.openai.azure.com, key from $WATCHER_AZURE_OPENAI__API_KEY"
            in (lines)
        )

    def test_systemd_credential_per_provider(self, tmp_path: Path) -> None:
        """``$CREDENTIALS_DIRECTORY/<provider>-api-key``, as for Cohere."""
        credentials = tmp_path / "creds"
        credentials.mkdir()
        (credentials / "together-api-key").write_text("sk-cred\n")
        settings = load_settings(write(tmp_path, config_for("together")), environ={})
        key = resolve_api_key(
            settings, {"CREDENTIALS_DIRECTORY": str(credentials)}, provider="together"
        )
        assert key.value.get_secret_value() == "sk-cred"

    def test_secrets_registered_for_every_section(self, tmp_path: Path) -> None:
        """Configured keys of every section are scrubbed; a base-URL password is refused
        at load (issue 11, finding 1: aiohttp fails the first request), unechoed."""
        path = write(tmp_path, "mistral: {api_key: sk-mistral-hunter2}\nmodels: [a]\n")
        register_secrets(load_settings(path, environ={}), None)
        assert SECRETS.scrub("sk-mistral-hunter2") == "***"
        bad = write(
            tmp_path, "together: {base_url: 'https://u:pw-hunter2@gw.example'}\nmodels: [a]\n"
        )
        with pytest.raises(ConfigError, match="must not contain credentials") as caught:
            load_settings(bad, environ={})
        assert "pw-hunter2" not in str(caught.value)


class TestOpenAI:
    def test_organization_and_project(self, tmp_path: Path) -> None:
        """From the section, else from the SDK's variables; blank is unset."""
        path = write(tmp_path, config_for("openai"))
        plain = load_settings(path, environ={})
        assert (plain.openai.organization, plain.openai.project) == (None, None)
        from_env = load_settings(path, environ={"OPENAI_ORG_ID": "org-e", "OPENAI_PROJECT_ID": " "})
        assert (from_env.openai.organization, from_env.openai.project) == ("org-e", None)
        path = write(tmp_path, "openai: {organization: org-f, project: proj-f}\n" + config_for(
            "openai"))  # fmt: skip
        own = load_settings(path, environ={"OPENAI_ORG_ID": "org-e"})
        assert (own.openai.organization, own.openai.project) == ("org-f", "proj-f")

    def test_webhook_secret_file_must_be_readable(self, tmp_path: Path) -> None:
        """Checked at load like api_key_file; a readable file is kept as a path."""
        missing = tmp_path / "nope"
        path = write(tmp_path, f"openai: {{webhook_secret_file: {missing}}}\nmodels: [a]\n")
        (line,) = problems_of(path)
        assert line.startswith(f"openai.webhook_secret_file: cannot read {missing}")
        secret = write(tmp_path, "whsec_x", "secret")
        path = write(tmp_path, f"openai: {{webhook_secret_file: {secret}}}\nmodels: [a]\n")
        assert load_settings(path, environ={}).openai.webhook_secret_file == secret

    def test_base_url_and_budget(self, tmp_path: Path) -> None:
        """A gateway's base URL (trailing slash dropped); the provider's own budget."""
        path = write(
            tmp_path,
            "openai: {base_url: 'http://127.0.0.1:9/openai/v1/', max_requests_per_minute: 7}\n"
            "poll: {max_requests_per_minute: 99}\n" + config_for("openai"),
        )
        settings = load_settings(path, environ={})
        assert settings.openai.base_url == "http://127.0.0.1:9/openai/v1"
        assert settings.requests_per_minute("openai") == 7
        assert settings.requests_per_minute("mistral") == 99
        bad = write(tmp_path, "openai: {base_url: ftp://x, page_size: 0}\nmodels: [a]\n", "b.yaml")
        assert problems_of(bad) == [
            "openai.base_url: must be an http:// or https:// URL",
            "openai.page_size: must be greater than or equal to 1",
        ]


class TestAzure:
    def test_base_url_required_when_used(self, tmp_path: Path) -> None:
        """An azure-openai model without azure_openai.base_url: one line with an example."""
        path = write(tmp_path, "models:\n  - {id: a, provider: azure-openai}\n")
        assert problems_of(path) == [
            "azure_openai.base_url: required for azure-openai models, "
            "e.g. https://RESOURCE.openai.azure.com/openai/v1"
        ]

    def test_api_version_from_the_url_or_the_key(self, tmp_path: Path) -> None:
        """The dated API: ``?api-version=`` in base_url moves to api_version."""
        path = write(
            tmp_path,
            "azure_openai: {base_url: 'https://r.openai.azure.com/openai?api-version=2024-10-21'}\n"
            "models:\n  - {id: a, provider: azure-openai}\n",
        )
        section = load_settings(path, environ={}).azure_openai
        assert (section.base_url, section.api_version) == (
            "https://r.openai.azure.com/openai", "2024-10-21"
        )  # fmt: skip
        path = write(
            tmp_path,
            "azure_openai: {base_url: 'https://r.openai.azure.com/openai', api_version: v}\n"
            "models: [a]\n",
        )
        assert load_settings(path, environ={}).azure_openai.api_version == "v"
        v1 = AzureOpenAISettings(base_url=AZURE_URL)
        assert (v1.base_url, v1.api_version) == (AZURE_URL, None)

    def test_other_query_is_rejected(self, tmp_path: Path) -> None:
        path = write(
            tmp_path, "azure_openai: {base_url: 'https://r.example/openai?x=1'}\nmodels: [a]\n"
        )
        assert problems_of(path) == [
            "azure_openai.base_url: must be an http(s) URL with no query but ?api-version="
        ]


class TestFireworks:
    def test_account_required_when_used(self, tmp_path: Path) -> None:
        path = write(tmp_path, "models:\n  - {id: a, provider: fireworks}\n")
        assert problems_of(path) == [
            "fireworks.account_id: required for fireworks models (or set $FIREWORKS_ACCOUNT_ID)"
        ]

    @pytest.mark.parametrize(
        ("text", "environ", "expected"),
        [
            ("", {"FIREWORKS_ACCOUNT_ID": "from-sdk-var"}, "from-sdk-var"),
            ("", {"WATCHER_FIREWORKS__ACCOUNT_ID": "from-watcher-var"}, "from-watcher-var"),
            ("fireworks: {account_id: in-file}\n", {"FIREWORKS_ACCOUNT_ID": "x"}, "in-file"),
            ("fireworks: null\n", {"FIREWORKS_ACCOUNT_ID": "acct"}, "acct"),
        ],
        ids=["sdk-variable", "watcher-variable", "file-wins", "null-section"],
    )
    def test_account_sources(
        self, tmp_path: Path, text: str, environ: dict[str, str], expected: str
    ) -> None:
        path = write(tmp_path, text + "models:\n  - {id: a, provider: fireworks}\n")
        assert load_settings(path, environ=environ).fireworks.account_id == expected

    def test_account_id_shape(self, tmp_path: Path) -> None:
        path = write(tmp_path, "fireworks: {account_id: 'a/b'}\nmodels: [a]\n")
        (line,) = problems_of(path)
        assert line.startswith("fireworks.account_id: must be a Fireworks account id")


class TestReload:
    def test_keys_of_every_section_are_restart_only(self, tmp_path: Path) -> None:
        """A changed key file of any provider is named by its section's dotted path."""
        for name in PROVIDER_NAMES:
            assert f"{section_name(name)}.api_key_file" in RESTART_ONLY_KEYS
        key = write(tmp_path, "k", "key")
        old = load_settings(write(tmp_path, "models: [a]\n", "1.yaml"), environ={})
        new = load_settings(
            write(tmp_path, f"azure_openai: {{api_key_file: {key}}}\nmodels: [a]\n", "2.yaml"),
            environ={},
        )
        assert restart_only_changes(old, new) == ["azure_openai.api_key_file"]

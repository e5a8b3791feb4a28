"""The command line (flags, --version, check-config, exit codes) and the logging it sets up."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import platform
import re
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from support.waiting import wait_for

from exporter import __version__
from exporter.cli import run_cli
from exporter.config import ENV_PREFIX
from exporter.logs import REDACTED, configure_logging
from exporter.natsserver import free_port
from exporter.settings import LogSettings, Secret
from exporter.settingstable import SETTINGS

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable  # the interpreter running the tests: whichever venv it is
PASSWORD = "pw-Kd2-never-print-me"
TOKEN = "tok-Rm7-never-print-me"


@pytest.fixture
def restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def clean_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if not name.startswith(ENV_PREFIX)}


# -- flags and exit codes -----------------------------------------------------------------------------------


def test_version_names_the_exporter_python_and_nats_py(capsys):
    assert run_cli(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == (
        f"nats-jetstream-exporter {__version__} (Python {platform.python_version()}, "
        f"nats-py {version('nats-py')})\n"
    )


def test_help_lists_the_flags_and_check_config(capsys):
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for word in (
        "--config FILE",
        "--nats-url URL",
        "--web.listen-address HOST:PORT",
        "--interval DURATION",
        "--dead-letter-stream NAME",
        "--log-level",
        "--log-format",
        "--web.config.file",
        "check-config",
        ":10422",
        "9100-9999",
    ):
        assert word in out


def test_usage_errors_exit_2(capsys):
    assert run_cli(["--no-such-flag"]) == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
    assert run_cli(["no-such-subcommand"]) == 2
    assert "invalid choice" in capsys.readouterr().err


def test_check_config_prints_a_summary_without_secrets(tmp_path, capsys, monkeypatch):
    config = tmp_path / "config.yaml"
    config.write_text(
        "nats:\n  servers: [nats://nats.ai:4222]\n  user: exporter\n"
        "filters:\n  streams:\n    exclude: '.*_STREAM'\n",
        encoding="utf-8",
    )
    monkeypatch.setenv(f"{ENV_PREFIX}NATS_PASSWORD", PASSWORD)
    code = run_cli(["check-config", "--config", str(config), "--dead-letter-stream", "AI_DLQ"])
    out, err = capsys.readouterr()
    assert (code, err) == (0, "")
    assert PASSWORD not in out
    assert out.startswith("configuration is valid\n")
    rows = summary_rows(out)
    assert rows["config file"] == str(config)
    assert rows["nats.servers"] == "nats://nats.ai:4222"
    assert rows["nats.user"] == "exporter"
    assert rows["nats.password"] == "set (not shown)"
    assert rows["nats.token"] == "none"
    assert rows["web.listen_address"] == ":10422"
    assert (rows["collection.interval"], rows["collection.deadline"]) == ("15s", "10s")
    assert rows["collection.concurrency"] == "16"
    assert rows["filters.streams.exclude"] == "'.*_STREAM'"
    assert rows["dead_letter_streams"] == "AI_DLQ"
    assert rows["ack_latency.buckets"].startswith("5ms, 10ms, 25ms")
    assert rows["scope in use"].startswith("decided when connected: cluster for a system-account user")
    # Every setting of the table is printed, each on its own line.
    assert set(rows) == {"config file", "scope in use"} | {setting.key for setting in SETTINGS}


def test_check_config_names_a_scope_that_is_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(f"{ENV_PREFIX}SCOPE", "cluster")
    assert run_cli(["check-config"]) == 0
    assert summary_rows(capsys.readouterr().out)["scope in use"] == "cluster"


def summary_rows(out: str) -> dict[str, str]:
    return dict(re.findall(r"^  ([^:]+):\s+(.*)$", out, flags=re.MULTILINE))


def test_shared_flags_work_before_and_after_the_subcommand(capsys):
    # The subparser must not reset a flag given before the subcommand to its default.
    assert run_cli(["--interval", "5s", "--nats-url", "nats://a:1", "check-config"]) == 0
    rows = summary_rows(capsys.readouterr().out)
    assert (rows["collection.interval"], rows["collection.deadline"]) == ("5s", "3.33333s")
    assert run_cli(["check-config", "--interval", "1m", "--log-format", "json"]) == 0
    rows = summary_rows(capsys.readouterr().out)
    assert (rows["collection.interval"], rows["collection.deadline"]) == ("1m", "10s")
    assert (rows["log.level"], rows["log.format"]) == ("info", "json")
    # Given on both sides, the subcommand's value is the later one on the command line, and wins.
    assert run_cli(["--interval", "5s", "check-config", "--interval", "30s"]) == 0
    assert summary_rows(capsys.readouterr().out)["collection.interval"] == "30s"


def test_every_row_with_a_flag_is_a_flag(capsys):
    assert run_cli(["--help"]) == 0
    out = capsys.readouterr().out
    for setting in SETTINGS:
        assert (setting.flag is not None and setting.flag in out) or (setting.flag is None), setting.key
        if setting.secret:
            assert setting.key not in out  # no flag, not even in the help


def test_check_config_validates_the_web_config_file(tmp_path, capsys):
    web_config = tmp_path / "web.yml"
    hashed = bcrypt.hashpw(b"scrape-password", bcrypt.gensalt(rounds=4)).decode()
    web_config.write_text(f"basic_auth_users:\n  prometheus: {hashed}\n", encoding="utf-8")
    assert run_cli(["check-config", "--web.config.file", str(web_config)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"web.config_file:\s+{re.escape(str(web_config))} \(.*basic auth", out)
    assert hashed not in out

    web_config.write_text("basic_auth_user:\n  prometheus: x\n", encoding="utf-8")
    assert run_cli(["check-config", "--web.config.file", str(web_config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"nats-jetstream-exporter: error: {web_config}")
    assert err.count("\n") == 1


def test_the_daemon_reports_a_configuration_error_before_starting(capsys):
    assert run_cli(["--interval", "fast"]) == 2
    assert capsys.readouterr().err == (
        "nats-jetstream-exporter: error: --interval: collection.interval: invalid duration 'fast': "
        'use a number with a unit (d, h, m, s, ms, us, ns), e.g. "15s", "1m30s", "500ms", '
        "or a plain number of seconds\n"
    )


# -- real processes --------------------------------------------------------------------------------


def test_check_config_in_a_real_process_fails_without_a_traceback(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text(f"nats:\n  user: exporter\n  password: {PASSWORD}\n  passwrd: x\n", encoding="utf-8")
    result = subprocess.run(
        [PYTHON, "-m", "exporter", "check-config", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=clean_environment(),
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"nats-jetstream-exporter: error: {config}: nats.passwrd: unknown key 'passwrd' in nats; "
        "did you mean 'password'?\n"
    )


def test_check_config_in_a_real_process_accepts_the_example(tmp_path):
    result = subprocess.run(
        [PYTHON, "-m", "exporter", "--config", "examples/config.yaml", "check-config"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=REPO,
        env=clean_environment(),
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert "configuration is valid" in result.stdout


async def test_the_daemon_runs_with_json_logs_and_never_logs_the_token(tmp_path, nats_server):
    """argv -> settings -> logging -> app: a real exporter process against a real, token-protected server."""
    nats_server.extra_config = f'authorization {{ token: "{TOKEN}" }}'
    nats_server.restart()
    port = free_port()
    env = clean_environment() | {f"{ENV_PREFIX}NATS_TOKEN": TOKEN, f"{ENV_PREFIX}LOG_FORMAT": "json"}
    argv = ["--nats-url", nats_server.url, "--interval", "500ms", "--web.listen-address", f"127.0.0.1:{port}"]
    stderr_path = tmp_path / "stderr.log"
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = await asyncio.create_subprocess_exec(
            PYTHON, "-m", "exporter", *argv, "--log-level", "debug",
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr, cwd=REPO, env=env,
        )  # fmt: skip
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

            async def ready() -> bool:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
                        return response.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    return False

            await wait_for(ready, timeout=20, message="the exporter to connect and collect")
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert "nats_up 1" in await response.text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0
    lines = stderr_path.read_text(encoding="utf-8").splitlines()
    assert lines, "the daemon logged nothing"
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"ts", "level", "logger", "message"} <= record.keys() for record in records)
    assert TOKEN not in "\n".join(lines)


def fail_with(error: Exception) -> None:
    raise error


# -- logging --------------------------------------------------------------------------------


def test_text_logs_are_one_line_with_timestamp_level_logger_and_fields(restore_logging):
    stream = io.StringIO()
    configure_logging(LogSettings(level="info", format="text"), stream=stream)
    log = logging.getLogger("exporter.test")
    log.debug("not shown at info")
    log.info("collected %d streams", 7, extra={"stream": "AI_DLQ", "note": "two words"})
    line = stream.getvalue()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z info exporter\.test collected 7 streams "
        r'stream=AI_DLQ note="two words"\n',
        line,
    ), line


def test_json_logs_are_one_object_per_line_with_extra_fields(restore_logging):
    stream = io.StringIO()
    configure_logging(LogSettings(level="debug", format="json"), stream=stream)
    log = logging.getLogger("exporter.test")
    log.debug("cycle done", extra={"duration_seconds": 0.25, "streams": 7})
    try:
        fail_with(RuntimeError("boom"))
    except RuntimeError:
        log.exception("cycle failed")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first.keys() == {"ts", "level", "logger", "message", "duration_seconds", "streams"}
    assert (first["level"], first["logger"], first["message"]) == ("debug", "exporter.test", "cycle done")
    assert (first["duration_seconds"], first["streams"]) == (0.25, 7)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["ts"])
    assert second["level"] == "error"
    assert "RuntimeError: boom" in second["exception"]


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_registered_secrets_are_redacted_everywhere_in_a_record(restore_logging, log_format):
    stream = io.StringIO()
    configure_logging(
        LogSettings(format=log_format), secrets=[Secret(PASSWORD), Secret(TOKEN)], stream=stream
    )
    log = logging.getLogger("nats.aio.client")
    log.warning("connect failed for nats://u:%s@host", PASSWORD)
    preformatted = f"token {TOKEN} rejected"  # as a library might log it, not through %-arguments
    log.warning(preformatted, extra={"url": f"nats://{TOKEN}@h", "attempt": 3})
    try:
        fail_with(ConnectionError(f"auth with {PASSWORD} failed"))
    except ConnectionError:
        log.exception("giving up")
    text = stream.getvalue()
    assert PASSWORD not in text
    assert TOKEN not in text
    assert text.count(REDACTED) == 4
    assert "auth with *** failed" in text


def test_configuring_again_replaces_the_handler_and_keeps_others(restore_logging):
    first, second = io.StringIO(), io.StringIO()
    configure_logging(LogSettings(), stream=first)
    handlers_after_first = len(logging.getLogger().handlers)
    configure_logging(LogSettings(level="error"), stream=second)
    assert len(logging.getLogger().handlers) == handlers_after_first
    logging.getLogger("exporter.test").warning("below error")
    logging.getLogger("exporter.test").error("shown once")
    assert first.getvalue() == ""
    assert second.getvalue().count("shown once") == 1
    assert "below error" not in second.getvalue()

"""The container image's recipe, replayed without a Docker engine, and hadolint on the Dockerfile.

The wheel is built from a copy of exactly what the Dockerfile copies, the dependency wheels are collected,
and a fresh virtual environment gets them the way the runtime stage installs them (offline, from the
wheels only). The daemon then runs from that environment, and the Dockerfile's own HEALTHCHECK command
is run against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import yaml
from support.pki import make_pki
from support.waiting import wait_for

import exporter
from exporter.natsserver import NatsServerProcess, free_port
from exporter.settings import DEFAULT_LISTEN_ADDRESS, split_listen_address

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
HADOLINT = Path(sys.executable).parent / "hadolint"
STEP_TIMEOUT = 300  # seconds for one build or install step; they take seconds with a warm index

# The commands this test replays, as they appear in the Dockerfile (container paths). If the Dockerfile
# changes one of them, test_the_dockerfile_holds_the_replayed_recipe fails: change both together.
COPY_SOURCES = ("pyproject.toml", "README.md", "exporter")
RECIPE = (
    "COPY pyproject.toml README.md ./",
    "COPY exporter ./exporter",
    "python -m build --wheel --outdir /dist .",
    "python -m pip wheel --no-cache-dir --wheel-dir /wheels /dist/*.whl",
    "python -m venv /opt/venv",
    "/opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels nats-jetstream-exporter",
)


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and whitespace collapsed."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("#"):
            continue
        pending += " " + line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1]
            continue
        text = " ".join(pending.split())
        pending = ""
        if text:
            keyword, _, arguments = text.partition(" ")
            instructions.append((keyword.upper(), arguments))
    return instructions


def instruction(keyword: str) -> str:
    (arguments,) = [args for key, args in dockerfile_instructions() if key == keyword]
    return arguments


@dataclass(frozen=True)
class ImageVenv:
    root: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def daemon(self) -> Path:
        return self.root / "bin" / "nats-jetstream-exporter"


def run_step(command: list[str], *, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=STEP_TIMEOUT, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    )
    return result


@pytest.fixture(scope="module")
def image_venv(tmp_path_factory: pytest.TempPathFactory) -> ImageVenv:
    root = tmp_path_factory.mktemp("image")
    source, dist, wheels, venv = root / "src", root / "dist", root / "wheels", root / "venv"
    # COPY pyproject.toml README.md ./ and COPY exporter ./exporter, minus what .dockerignore leaves out.
    source.mkdir()
    for name in COPY_SOURCES:
        origin = REPO / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, source / name)
    run_step([sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), "."], cwd=source)
    (wheel,) = dist.glob("*.whl")
    run_step(
        [sys.executable, "-m", "pip", "wheel", "--no-cache-dir", "--wheel-dir", str(wheels), str(wheel)],
        cwd=root,
    )
    run_step([sys.executable, "-m", "venv", str(venv)], cwd=root)
    install = [
        str(venv / "bin" / "pip"),
        "install",
        "--no-cache-dir",
        "--no-index",
        "--find-links",
        str(wheels),
    ]
    run_step([*install, "nats-jetstream-exporter"], cwd=root)
    return ImageVenv(venv, wheel)


def test_the_dockerfile_holds_the_replayed_recipe():
    text = "\n".join(f"{key} {args}" for key, args in dockerfile_instructions())
    for command in RECIPE:
        assert command in text, f"the Dockerfile no longer runs {command!r}: update RECIPE and image_venv"
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert ignore[ignore.index("*") :].count("*") == 1, ".dockerignore is an allow-list starting with '*'"
    for name in COPY_SOURCES:
        assert f"!{name}" in ignore or f"!{name}/" in ignore, f".dockerignore must allow {name}"


def test_the_image_runs_as_a_numeric_non_root_user_and_exposes_the_default_port():
    user, _, group = instruction("USER").partition(":")
    assert user.isdigit()
    assert int(user) > 0
    assert group.isdigit()
    port = split_listen_address(DEFAULT_LISTEN_ADDRESS)[1]
    assert instruction("EXPOSE") == str(port)
    assert json.loads(instruction("ENTRYPOINT")) == ["nats-jetstream-exporter"]
    froms = [args for key, args in dockerfile_instructions() if key == "FROM"]
    assert len(froms) == 2, "multi-stage: build and runtime"
    assert re.search(r"ARG PYTHON_IMAGE=python:3\.11-slim-\w+", DOCKERFILE.read_text(encoding="utf-8"))


def test_hadolint_finds_nothing():
    config = REPO / ".hadolint.yaml"
    command = [str(HADOLINT), "--failure-threshold", "error", "--format", "json"]
    if config.exists():
        command += ["--config", str(config)]
    result = subprocess.run(
        [*command, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Not even a warning: a rule that does not apply is ignored in .hadolint.yaml with its reason.
    assert json.loads(result.stdout or "[]") == []


def test_the_installed_daemon_reports_its_version(image_venv, tmp_path):
    result = run_step([str(image_venv.daemon), "--version"], cwd=tmp_path)
    assert f"nats-jetstream-exporter {exporter.__version__}" in result.stdout + result.stderr
    assert image_venv.wheel.name.startswith(f"nats_jetstream_exporter-{exporter.__version__}-")


def test_the_installed_package_is_the_wheel_not_the_work_tree(image_venv, tmp_path):
    result = run_step(
        [str(image_venv.python), "-c", "import exporter; print(exporter.__file__)"], cwd=tmp_path
    )
    assert Path(result.stdout.strip()).is_relative_to(image_venv.root)
    packaged = run_step(
        [str(image_venv.python), "-c", "import importlib.resources as r; print(r.files('exporter.demo'))"],
        cwd=tmp_path,
    )
    # The demo's platform definition is package data; a wheel without it would break `demo` in the image.
    assert (Path(packaged.stdout.strip()) / "platform.yaml").is_file()


def test_the_image_can_authenticate_with_nkeys_and_credentials_files(image_venv, tmp_path):
    # nats-py signs NKey and credentials-file logins with the `nkeys` package (its "nkeys" extra).
    result = subprocess.run(
        [str(image_venv.python), "-c", "import nkeys"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, "the image lacks `nkeys`: depend on nats-py[nkeys] in pyproject.toml"


def test_check_config_accepts_the_kubernetes_config(image_venv, tmp_path):
    configmap = yaml.safe_load((REPO / "deploy" / "configmap.yaml").read_text(encoding="utf-8"))
    config = tmp_path / "config.yaml"
    config.write_text(configmap["data"]["config.yaml"], encoding="utf-8")
    result = run_step([str(image_venv.daemon), "check-config", "--config", str(config)], cwd=tmp_path)
    assert "configuration is valid" in result.stdout
    assert "AI_DLQ" in result.stdout


# -- the daemon from the image's venv, and the Dockerfile's HEALTHCHECK against it ------------------------


def healthcheck_passes(image_venv: ImageVenv, url: str) -> bool:
    """Run the Dockerfile's HEALTHCHECK command with the image's python; True when it exits 0."""
    options = instruction("HEALTHCHECK")
    command = json.loads(options[options.index("CMD ") + len("CMD ") :])
    assert command[0] == "python"
    environment = {**os.environ, "EXPORTER_HEALTHCHECK_URL": url}
    result = subprocess.run(
        [str(image_venv.python), *command[1:]], env=environment, capture_output=True, timeout=30, check=False
    )
    return result.returncode == 0


def test_the_healthcheck_default_url_is_the_default_port():
    (default,) = re.findall(r"EXPORTER_HEALTHCHECK_URL=(\S+)", instruction("ENV"))
    port = split_listen_address(DEFAULT_LISTEN_ADDRESS)[1]
    assert default == f"http://127.0.0.1:{port}/healthz"


@pytest.fixture
def running_daemon(image_venv: ImageVenv, nats_server: NatsServerProcess, tmp_path: Path):
    """Start the installed daemon against the test's nats-server; yields a function (extra flags -> port)."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> tuple[int, subprocess.Popen[bytes], Path]:
        port = free_port()
        log = tmp_path / f"daemon-{port}.log"
        with log.open("wb") as output:
            process = subprocess.Popen(
                [
                    str(image_venv.daemon),
                    "--web.listen-address",
                    f"127.0.0.1:{port}",
                    "--nats-url",
                    nats_server.url,
                    "--interval",
                    "1s",
                    *flags,
                ],
                cwd=tmp_path,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        processes.append(process)
        return port, process, log

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


async def test_the_installed_daemon_serves_and_passes_the_healthcheck(running_daemon, image_venv):
    port, process, log = running_daemon()
    base = f"http://127.0.0.1:{port}"
    await wait_for(
        lambda: healthcheck_passes(image_venv, f"{base}/healthz"), timeout=20, message=f"healthz ({log})"
    )

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def ready() -> bool:
            try:
                async with session.get(f"{base}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(ready, timeout=20, message="readyz after the first collection")
        async with session.get(f"{base}/metrics") as response:
            exposition = await response.text()
    assert re.search(r"^nats_up 1(\.0)?$", exposition, re.MULTILINE), exposition
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0, log.read_text(encoding="utf-8")
    assert not healthcheck_passes(image_venv, f"{base}/healthz")


async def test_the_healthcheck_works_when_the_web_config_turns_on_tls(running_daemon, image_venv, tmp_path):
    pki = make_pki(tmp_path / "pki")
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        f"tls_server_config:\n  cert_file: {pki.server.cert_file}\n  key_file: {pki.server.key_file}\n",
        encoding="utf-8",
    )
    port, _, log = running_daemon("--web.config.file", str(web_config))
    await wait_for(
        lambda: healthcheck_passes(image_venv, f"https://127.0.0.1:{port}/healthz"),
        timeout=20,
        message=f"healthz over TLS ({log})",
    )
    assert not healthcheck_passes(image_venv, f"http://127.0.0.1:{port}/healthz")

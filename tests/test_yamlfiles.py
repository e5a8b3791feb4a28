"""One way to read a YAML file: the configuration, the web config and the platform file fail alike."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from exporter.config import load_config_file
from exporter.demo.platform import load_platform
from exporter.errors import ConfigError
from exporter.webconfig import load_web_config
from exporter.yamlfiles import MAX_QUOTED_LENGTH, brief, quoted

READERS: dict[str, tuple[Callable[[Path], object], str]] = {
    "configuration": (load_config_file, "configuration file"),
    "web config": (lambda path: load_web_config(str(path)), "web config file"),
    "platform": (load_platform, "platform file"),
}


@pytest.fixture(params=list(READERS))
def reader(request: pytest.FixtureRequest) -> tuple[Callable[[Path], object], str]:
    return READERS[request.param]


def refusal(read: Callable[[Path], object], path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        read(path)
    assert caught.value.source == str(path)
    assert "\n" not in str(caught.value)
    return caught.value.message


def test_a_duplicate_key_is_refused(tmp_path: Path, reader) -> None:
    read, _ = reader
    path = tmp_path / "file.yaml"
    path.write_text("a: 1\nb: 2\na: 3\n", encoding="utf-8")
    assert refusal(read, path) == "not valid YAML: duplicate key 'a' at line 3, column 1"


@pytest.mark.timeout(10)
def test_a_fifo_a_directory_and_a_device_are_refused_at_once(tmp_path: Path, reader) -> None:
    read, what = reader
    fifo = tmp_path / "file.fifo"
    os.mkfifo(fifo)
    assert refusal(read, fifo) == f"cannot read the {what}: not a regular file (a FIFO)"
    assert refusal(read, tmp_path) == f"cannot read the {what}: not a regular file (a directory)"
    assert refusal(read, Path(os.devnull)) == f"cannot read the {what}: not a regular file (a device)"


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: " + "[" * 100_000, "not valid YAML: nested deeper than 32 levels"),
        ("a: " + "7" * 5000 + "\n", "not valid YAML: a value cannot be converted (a number too long?)"),
        ("#" * (2 * 1024 * 1024), "larger than 1024 KiB"),
    ],
    ids=["deep", "long number", "large"],
)
def test_hostile_documents_are_one_line(tmp_path: Path, reader, text: str, message: str) -> None:
    read, _ = reader
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    assert message in refusal(read, path)


def test_only_short_values_are_quoted() -> None:
    short = "x" * MAX_QUOTED_LENGTH
    assert (brief(short), quoted(short)) == (short, repr(short))
    assert (
        quoted("x" * (MAX_QUOTED_LENGTH + 1)) == f"a value of {MAX_QUOTED_LENGTH + 1} characters (not shown)"
    )
    assert quoted("line\nbreak") == "a value of 10 characters (not shown)"  # one line, always

"""The glibc mmap threshold fix that keeps resident memory flat across cycles (see exporter/memory.py)."""

from __future__ import annotations

import platform

import pytest

from exporter.memory import fix_mmap_threshold


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_fixes_the_mmap_threshold_on_glibc():
    assert fix_mmap_threshold() is True

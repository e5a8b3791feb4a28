"""Keeping the daemon's resident memory flat across cycles.

Each cycle allocates a few multi-megabyte buffers (the exposition in two formats and their gzip forms)
and frees the previous ones. glibc serves such blocks with mmap at first, but its *dynamic* mmap
threshold rises after the first free, so later ones come from the heap, which fragments and is rarely
returned: measured at 1,000 streams x 10 consumers with a 2 s interval, resident memory grew to 207 MB
within 20 s, against a steady 133 MB (peak 142 MB) with the threshold fixed at glibc's initial 128 KiB.
Setting it through ``mallopt`` is the in-process equivalent of ``MALLOC_MMAP_THRESHOLD_=131072``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 128 * 1024


def fix_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold; True when it was set. A no-op elsewhere (musl, macOS)."""
    library = ctypes.util.find_library("c")
    if library is None:
        return False
    try:
        libc = ctypes.CDLL(library)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
    logger.debug("glibc mmap threshold fixed at %d bytes: %s", MMAP_THRESHOLD_BYTES, done)
    return done

"""The comparison for /metrics latency: a bare aiohttp handler serving fixed bytes, nothing else."""

from __future__ import annotations

import gzip
import sys
from pathlib import Path

from aiohttp import web


def main() -> None:
    body = Path(sys.argv[1]).read_bytes()
    compressed = gzip.compress(body, 3, mtime=0)

    async def metrics(request: web.Request) -> web.Response:
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(body=compressed, headers={"Content-Encoding": "gzip"})
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)


if __name__ == "__main__":
    main()

"""A plain static file server for the tiles tests: ``python -m http.server`` in a subprocess
on 127.0.0.1 (an OS-chosen port), the simplest web server an auditor might put in front of a
``ledger tiles export`` directory."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def static_server(directory: Path) -> Iterator[str]:
    """Serve ``directory``; yield its base URL; stop the server on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
         "--directory", str(directory)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N (http://...) ..."
        match = re.search(r" port (\d+) ", line)
        assert match is not None, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{match.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

"""A tiny local HTTP server for download tests (no network needed)."""

from __future__ import annotations

import http.server
import threading
from typing import Dict, List, Set


class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.files[path]``; can cut chosen files short."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        name = self.path.lstrip("/")
        server = self.server
        with server.lock:
            server.hits.append(name)
        data = server.files.get(name)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        # Announce the full length even when cutting short, so the client
        # sees a broken transfer rather than a short but complete one.
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if name in server.truncate:
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)

    def log_message(self, format, *args):  # keep test output quiet
        pass


class FileServer:
    """Serve in-memory files from 127.0.0.1 on a free port, in a thread.

    Parameters
    ----------
    files : dict of str to bytes
        URL path (without the leading ``/``) -> content.

    Attributes
    ----------
    url : str
        ``http://127.0.0.1:<port>/``.
    hits : list of str
        Paths requested so far, in order.
    truncate : set of str
        Paths whose responses are cut off halfway (Content-Length promises
        the full size, then the connection is closed).
    """

    def __init__(self, files: Dict[str, bytes]):
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.files = dict(files)
        self._httpd.hits = []
        self._httpd.truncate = set()
        self._httpd.lock = threading.Lock()
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    @property
    def files(self) -> Dict[str, bytes]:
        return self._httpd.files

    @property
    def hits(self) -> List[str]:
        with self._httpd.lock:
            return list(self._httpd.hits)

    @property
    def truncate(self) -> Set[str]:
        return self._httpd.truncate

    def start(self) -> "FileServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

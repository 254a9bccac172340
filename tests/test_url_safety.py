"""Where URL fetches may go, and for how long: private, loopback and local addresses refused
on a server (after DNS, on every redirect hop, before any connection) unless opted in, one
message for whatever fails there, one deadline for a whole fetch, and malformed URLs as error
rows (locally) or 400s (on a server). Every server here binds 127.0.0.1 inside the test."""

import contextlib
import http.server
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest
from conftest import SAMPLE_IMAGES, jsonl
from typer.testing import CliRunner

from clipcls import webfetch
from clipcls.cli import app
from clipcls.client.protocol import Limits, RequestError, parse_request
from clipcls.errors import ImageError
from clipcls.webfetch import LOCAL, Refused, UrlPolicy, is_public, request, resolve, server_policy

runner = CliRunner()
IMAGE = (SAMPLE_IMAGES / "chelsea.png").read_bytes()
SERVER = server_policy((), 60.0)
MALFORMED = ["http://h:99999/x.png", "http://[::1/x.png", "http://a b/x.png", "http://a\x01b/x"]


class Site(http.server.BaseHTTPRequestHandler):
    """/photo.png is an image; /to?URL redirects there; /trickle-body and /trickle-head send
    a byte every 0.2 s (60 s in all)."""

    hits: Counter[str] = Counter()

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802
        Site.hits[self.path] += 1
        if sum(Site.hits.values()) > 100:
            self.send_error(404)
        elif self.path.startswith("/to?"):
            self.send_response(302)
            self.send_header("Location", self.path[len("/to?") :])
            self.end_headers()
        elif self.path.startswith("/trickle"):
            self._trickle(head=self.path == "/trickle-head")
        elif self.path == "/photo.png":
            self.send_response(200)
            self.send_header("Content-Length", str(len(IMAGE)))
            self.end_headers()
            self.wfile.write(IMAGE)
        else:
            self.send_error(404)

    def _trickle(self, head: bool) -> None:
        with contextlib.suppress(OSError):
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            if not head:
                self.wfile.write(b"Content-Length: 300\r\n\r\n")
            for _ in range(300):
                time.sleep(0.2)
                self.wfile.write(b"X" if head else b"\x89")
                self.wfile.flush()


@contextlib.contextmanager
def site() -> Iterator[int]:
    Site.hits.clear()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Site)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(httpd.server_address[1])
    finally:
        httpd.shutdown()
        httpd.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize(
    "address",
    ["10.0.0.1", "172.16.5.4", "192.168.1.1", "169.254.169.254", "127.0.0.1", "::1", "0.0.0.0",
     "::", "224.0.0.1", "ff02::1", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "fe80::1", "fc00::1",
     "100.64.0.1", "::127.0.0.1", "64:ff9b::7f00:1", "255.255.255.255"],
)  # fmt: skip
def test_local_and_private_addresses_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))
    assert not SERVER.allows("example.org", ipaddress.ip_address(address))
    assert LOCAL.allows("example.org", ipaddress.ip_address(address))  # the user's own machine


def test_public_addresses_are_public() -> None:
    for address in ("93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"):
        assert is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "localhost", "::1",
             "::ffff:127.0.0.1", "0.0.0.0", "0"],
)  # fmt: skip
def test_every_spelling_of_loopback_is_refused_after_resolving(host: str) -> None:
    """Decimal, octal, hex, short and mapped forms and names resolve first, then are checked:
    no connection is made (resolve is all that runs)."""
    with pytest.raises(Refused):
        resolve(host, 80, SERVER)
    assert resolve(host, 80, LOCAL)
    opted = server_policy(("127.0.0.0/8", "::1", "0.0.0.0"), 60)
    assert resolve(host, 80, opted)


def test_a_server_fetches_nothing_local_unless_opted_in() -> None:
    with site() as port:
        for url in (
            f"http://127.0.0.1:{port}/photo.png",
            f"http://localhost:{port}/photo.png",
            f"http://2130706433:{port}/photo.png",
            f"http://[::ffff:127.0.0.1]:{port}/photo.png",
            f"http://127.0.0.1:{closed_port()}/photo.png",
        ):
            with pytest.raises(ImageError) as refused:
                request(url, 1 << 20, SERVER)
            assert str(refused.value) == f"cannot fetch URL: {url}"  # no port-scanner answers
        assert sum(Site.hits.values()) == 0  # refused before connecting
        opted = server_policy(("localhost",), 60)
        assert request(f"http://localhost:{port}/photo.png", 1 << 20, opted).body == IMAGE
        # A redirect hop is checked like the first URL: to 127.0.0.1 by address is not opted in.
        hop = f"http://127.0.0.1:{port}/photo.png"
        with pytest.raises(ImageError, match="cannot fetch URL"):
            request(f"http://localhost:{port}/to?{hop}", 1 << 20, opted)
        assert Site.hits[f"/to?{hop}"] == 1 and Site.hits["/photo.png"] == 1
        both = server_policy(("localhost", "127.0.0.1"), 60)
        assert request(f"http://localhost:{port}/to?{hop}", 1 << 20, both).body == IMAGE


def test_redirects_stay_on_http_and_never_downgrade() -> None:
    with site() as port:
        base = f"http://127.0.0.1:{port}"
        for target in ("ftp://127.0.0.1/x.png", "file:///etc/passwd", "gopher://127.0.0.1:70/"):
            with pytest.raises(ImageError, match="redirected to"):
                request(f"{base}/to?{target}", 1 << 20, LOCAL)
        assert request(f"{base}/to?/photo.png", 1 << 20, LOCAL).body == IMAGE
        with pytest.raises(ImageError, match="redirects"):
            request(f"{base}/to?/to?/to?/to?/to?/to?/photo.png", 1 << 20, LOCAL)


def test_https_to_http_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """An https URL whose answer redirects to http: the hop is refused, not followed."""
    seen: list[str] = []

    def answer(parts, limit, policy, method, end):  # type: ignore[no-untyped-def]
        seen.append(parts.geturl())
        message = http.client.HTTPMessage()
        message["Location"] = "http://example.org/photo.png"
        return webfetch.Answer(302, "Found", message)

    import http.client

    monkeypatch.setattr(webfetch, "_once", answer)
    with pytest.raises(ImageError, match="redirected to http"):
        request("https://example.org/a.png", 1 << 20, LOCAL)
    assert seen == ["https://example.org/a.png"]


@pytest.mark.parametrize("path", ["/trickle-body", "/trickle-head"])
def test_a_trickling_server_cannot_hold_a_fetch_past_its_deadline(path: str) -> None:
    with site() as port:
        # Without the deadline the trickle ends after 60 s with a whole answer: no error.
        with pytest.raises(ImageError, match="no answer within 1 s"):
            request(f"http://127.0.0.1:{port}{path}", 1 << 20, UrlPolicy(deadline=1.0))


def test_a_local_run_stops_a_trickling_url_at_the_deadline(
    tiny_model: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(webfetch, "DEADLINE", 1.0)
    with site() as port:
        url = f"http://127.0.0.1:{port}/trickle-body"
        result = runner.invoke(
            app, ["predict", url, "--model", tiny_model, "--labels", "cat,dog", "-f", "jsonl"]
        )
    # Without the deadline the trickle ends after 60 s with a whole answer: no error row.
    assert result.exit_code == 0 and "no answer within 1 s" in jsonl(result.stdout)[0]["error"]


@pytest.mark.slow
def test_malformed_urls_are_error_rows_and_the_good_files_are_kept(tiny_model: str) -> None:
    good = str(SAMPLE_IMAGES / "chelsea.png")
    listed = "\n".join([*MALFORMED, good]) + "\n"
    done = subprocess.run(
        [sys.executable, "-m", "clipcls", "predict", "-", "--model", tiny_model]
        + ["--labels", "cat,dog", "-f", "jsonl", "-q"],
        input=listed,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    rows = jsonl(done.stdout)
    assert [r["path"] for r in rows] == [*MALFORMED, good]
    assert all("malformed URL" in r["error"] for r in rows[:-1]) and "predictions" in rows[-1]


@pytest.mark.parametrize(
    "url", [*MALFORMED, "http://a\x00b/x.png", "s3://bucket/x.png", "ftp://h/x.png", "http:///x"]
)
def test_a_server_request_with_a_malformed_url_is_a_400(url: str) -> None:
    with pytest.raises(RequestError) as refused:
        parse_request({"images": [{"url": url}], "labels": ["a", "b"]}, Limits(), [])
    assert refused.value.status == 400


@pytest.mark.slow
def test_the_server_refuses_loopback_urls_unless_allowed(tiny_model: str) -> None:
    from test_serve import Server

    with site() as port:
        server = Server(tiny_model, "--allow-url-hosts", "localhost")
        try:
            direct = f"http://127.0.0.1:{port}/photo.png"
            closed = f"http://127.0.0.1:{closed_port()}/photo.png"
            hop = f"http://localhost:{port}/to?{direct}"
            allowed = f"http://localhost:{port}/photo.png"
            status, answer = server.predict([{"url": u} for u in (direct, closed, hop, allowed)])
            bad = server.predict([{"url": MALFORMED[0]}])
            # the user's own loopback URL through --server: fetched by the client, uploaded
            mine = runner.invoke(
                app,
                ["predict", direct, "--server", server.url, "-f", "jsonl"]
                + ["--labels", "cat,dog", "-q"],
            )
        finally:
            assert server.stop() == 0
    assert status == 200
    rows = answer["predictions"]
    assert [r.get("error") for r in rows[:3]] == [
        f"cannot fetch URL: {u}" for u in (direct, closed, hop)
    ]
    assert "predictions" in rows[3]
    # the one opted-in fetch and the client's own; none to the refused ones
    assert Site.hits["/photo.png"] == 2
    assert mine.exit_code == 0 and "predictions" in jsonl(mine.stdout)[0], mine.output
    assert bad[0] == 400 and "malformed URL" in bad[1]["error"]


def test_allow_url_hosts_takes_hosts_not_urls(tiny_model: str) -> None:
    pytest.importorskip("litserve")
    for bad in ("http://h", "h:8080", "a b", "u@h"):
        result = runner.invoke(app, ["serve", "--model", tiny_model, "--allow-url-hosts", bad])
        assert result.exit_code == 2 and "--allow-url-hosts" in result.stderr, result.output

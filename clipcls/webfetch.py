"""http(s) fetches that go only where a policy lets them: the URL checked before anything is
sent, every address checked after DNS and on every redirect hop (and the connection made to
that checked address, so DNS rebinding cannot swap it), one deadline for the whole fetch."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from email.message import Message

from clipcls.errors import ImageError

HTTP_SCHEMES = ("http", "https")
TIMEOUT = 15.0  # seconds to connect, and between bytes
DEADLINE = 30.0  # seconds for a whole fetch, every try and redirect included
RETRIES = 3  # tries for a timeout, a dropped connection or a 5xx answer
BACKOFF = 0.5  # seconds before the second try, doubling after
REDIRECTS = 5  # hops followed
USER_AGENT = "clipcls"  # some servers refuse a library's default agent
CHUNK = 1 << 16
Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class UrlPolicy:
    """Where fetches may go. private: loopback, LAN, link-local, multicast and unspecified
    addresses too (a local run: the user's own machine); hosts: names, addresses or networks
    let through anyway (a server's --allow-url-hosts); detailed: errors say why (locally), or
    only "cannot fetch URL" (a server, so a client cannot use it to scan ports)."""

    private: bool = True
    hosts: tuple[str, ...] = ()
    deadline: float | None = None  # None: DEADLINE
    detailed: bool = True
    networks: tuple[Network, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        nets = []
        for host in self.hosts:
            try:
                nets.append(ipaddress.ip_network(host.strip("[]"), strict=False))
            except ValueError:
                continue  # a name, matched as written in the URL
        object.__setattr__(self, "networks", tuple(nets))

    def allows(self, host: str, address: Address) -> bool:
        """Whether a connection to address (which host resolved to) may be made."""
        if self.private or is_public(address):
            return True
        if host.lower().strip("[]") in (h.lower().strip("[]") for h in self.hosts):
            return True
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 to a network entry
        return any(address in net for net in self.networks)


LOCAL = UrlPolicy()


def server_policy(hosts: tuple[str, ...], seconds: float) -> UrlPolicy:
    """A server's policy: public addresses (and the hosts opted in), within its --timeout."""
    return UrlPolicy(private=False, hosts=hosts, deadline=min(DEADLINE, seconds), detailed=False)


def is_public(address: Address) -> bool:
    """False for loopback, private, link-local, multicast, unspecified and reserved addresses,
    also when written as an IPv4-mapped IPv6 address (::ffff:127.0.0.1)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


class Refused(Exception):
    """A fetch that failed; retry says whether another try may help."""

    def __init__(self, why: str, retry: bool = False, status: int = 0) -> None:
        super().__init__(why)
        self.retry, self.status = retry, status


def check_url(url: str) -> urllib.parse.SplitResult:
    """The parts of an http(s) URL, or ImageError saying why it is malformed (the caller
    names the URL, escaped as its output escapes it)."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise ImageError("malformed URL (a space or control character)")
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError when out of range or not a number
        host = parts.hostname or ""
        host.encode("idna")
    except (ValueError, UnicodeError) as error:
        raise ImageError(f"malformed URL ({error})") from None
    if parts.scheme.lower() not in HTTP_SCHEMES:
        raise ImageError("not an http(s) URL")
    if not host or port == 0:
        raise ImageError("malformed URL (no host, or port 0)")
    return parts


def resolve(host: str, port: int, policy: UrlPolicy) -> list[str]:
    """The addresses of host that policy lets a fetch connect to (Refused if none)."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        raise Refused(f"cannot resolve {host}: {error}", retry=True) from None
    kept = [str(info[4][0]) for info in found if _allowed(policy, host, str(info[4][0]))]
    if not kept:
        raise Refused(f"{host} is a private, loopback or local address")
    return list(dict.fromkeys(kept))


def on_private_network(url: str) -> bool:
    """Whether url's host is this machine or its network (some address of it is not public):
    a URL a server would refuse, but the user's own client may fetch. False for a URL that
    does not parse or resolve (then whoever fetches it reports why)."""
    try:
        parts = check_url(url)
        found = socket.getaddrinfo(parts.hostname or "", parts.port or 80, type=socket.SOCK_STREAM)
    except (ImageError, OSError, UnicodeError):
        return False
    return any(not is_public(_address(str(info[4][0]))) for info in found)


def _address(text: str) -> Address:
    return ipaddress.ip_address(text.partition("%")[0])


def _allowed(policy: UrlPolicy, host: str, address: str) -> bool:
    return policy.allows(host, _address(address))


@dataclass
class Answer:
    """A finished request: status, headers, and the body read within its limit."""

    status: int
    reason: str
    headers: Message
    body: bytes = b""


class TooLarge(Exception):
    """A body over the limit: its size, as the error says it."""


def request(url: str, limit: int, policy: UrlPolicy = LOCAL, method: str = "GET") -> Answer:
    """GET (or HEAD) url within policy: redirects followed and checked, at most limit bytes
    read, everything within policy.deadline; 4xx at once, the others after RETRIES tries.
    ImageError says why not (only "cannot fetch URL" under a non-detailed policy)."""
    seconds = DEADLINE if policy.deadline is None else policy.deadline
    end = time.monotonic() + seconds
    for attempt in range(RETRIES):
        try:
            return _follow(url, limit, policy, method, (end, seconds))
        except TooLarge as error:
            raise ImageError(f"too large to download: {url} is {error}") from None
        except Refused as error:
            if error.status and (error.status < 500 or attempt == RETRIES - 1):
                raise ImageError(f"HTTP {error}: {url}") from None
            late = time.monotonic() + BACKOFF * 2**attempt >= end
            if not error.retry or attempt == RETRIES - 1 or late:
                raise _failure(url, str(error), attempt + 1, policy) from None
        time.sleep(BACKOFF * 2**attempt)
    raise AssertionError("unreachable")


def _failure(url: str, why: str, tries: int, policy: UrlPolicy) -> ImageError:
    if not policy.detailed:
        return ImageError(f"cannot fetch URL: {url}")
    return ImageError(f"cannot download {url}: {why}" + (f" ({tries} tries)" if tries > 1 else ""))


def _follow(
    url: str, limit: int, policy: UrlPolicy, method: str, end: tuple[float, float]
) -> Answer:
    """One try: up to REDIRECTS hops, each checked; never https -> http or another scheme."""
    for _ in range(REDIRECTS + 1):
        try:
            parts = check_url(url)
        except ImageError as error:
            raise Refused(str(error)) from None
        answer = _once(parts, limit, policy, method, end)
        location = answer.headers.get("Location")
        if answer.status not in (301, 302, 303, 307, 308) or not location:
            if answer.status >= 400:
                why, status = f"{answer.status} {answer.reason}", answer.status
                raise Refused(why, retry=status >= 500, status=status)
            return answer
        target = urllib.parse.urljoin(url, location.strip())
        scheme = urllib.parse.urlsplit(target).scheme.lower()
        if scheme not in HTTP_SCHEMES or (parts.scheme.lower() == "https" and scheme == "http"):
            raise Refused(f"redirected to {scheme or 'no'} scheme: {target}")
        url = target
    raise Refused(f"more than {REDIRECTS} redirects")


def _once(
    parts: urllib.parse.SplitResult,
    limit: int,
    policy: UrlPolicy,
    method: str,
    end: tuple[float, float],
) -> Answer:
    """One request to one checked address; a timer shuts the socket at the deadline, so a
    server trickling a byte at a time cannot hold the fetch past it."""
    https = parts.scheme.lower() == "https"
    host, port = parts.hostname or "", parts.port or (443 if https else 80)
    error: Refused | None = None
    for address in resolve(host, port, policy):
        remaining = end[0] - time.monotonic()
        if remaining <= 0:
            raise Refused(f"no answer within {end[1]:g} s")
        try:
            sock = socket.create_connection((address, port), min(TIMEOUT, remaining))
        except OSError as failed:
            error = Refused(str(failed.strerror or failed), retry=True)
            continue
        return _exchange(sock, parts, https, limit, method, end)
    raise error or Refused(f"cannot connect to {host}", retry=True)


def _exchange(
    sock: socket.socket,
    parts: urllib.parse.SplitResult,
    https: bool,
    limit: int,
    method: str,
    end: tuple[float, float],
) -> Answer:
    fired = threading.Event()
    held = [sock]  # what the timer shuts: the TLS socket once wrapped (wrapping detaches sock)
    timer = threading.Timer(max(0.0, end[0] - time.monotonic()), _shut, (held, fired))
    timer.start()
    host = (parts.hostname or "").encode("idna").decode("ascii")
    try:
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            held[0] = sock
        kind = http.client.HTTPSConnection if https else http.client.HTTPConnection
        conn = kind(host, parts.port, timeout=TIMEOUT)
        conn.sock = sock  # connected already, to the address that was checked
        path = urllib.parse.quote(parts.path or "/", safe="/%:@!$&'()*+,;=~")
        query = urllib.parse.quote(parts.query, safe="/%:@!$&'()*+,;=?~")
        conn.request(method, path + (f"?{query}" if query else ""), headers=_HEADERS)
        response = conn.getresponse()
        answer = Answer(response.status, response.reason, response.msg)
        if method == "GET" and 200 <= response.status < 300:
            answer.body = _read_bounded(response, limit)
    except (OSError, http.client.HTTPException, ValueError) as error:
        if not fired.is_set():
            raise Refused(str(error) or type(error).__name__, retry=True) from None
    finally:
        timer.cancel()
        sock.close()
    if fired.is_set():  # the socket was shut under a read: what came is not the whole answer
        raise Refused(f"no answer within {end[1]:g} s")
    return answer


_HEADERS = {"User-Agent": USER_AGENT, "Accept": "*/*", "Connection": "close"}


def _shut(held: list[socket.socket], fired: threading.Event) -> None:
    fired.set()
    try:
        held[0].shutdown(socket.SHUT_RDWR)
    except (OSError, ValueError):
        pass


def _read_bounded(response: http.client.HTTPResponse, limit: int) -> bytes:
    declared = response.getheader("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"{int(declared) >> 20} MB")
    data = bytearray()
    while len(data) <= limit:
        chunk = response.read(min(CHUNK, limit + 1 - len(data)))
        if not chunk:
            break
        data += chunk
    if len(data) > limit:
        raise TooLarge(f"over {limit >> 20} MB")
    return bytes(data)

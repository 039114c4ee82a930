"""A small DNS server for the tests: UDP on 127.0.0.1 (a free port), answering A and AAAA queries for one name from
a list the test changes as it goes (``addresses``); another name, or the name with no address, is NXDOMAIN.
``mode`` makes it misbehave: ``silent`` answers nothing (the lookup times out), ``servfail`` answers SERVFAIL.
Written with ``struct``: a query's header and question in, the same with the answer records out."""
from __future__ import annotations

import asyncio
import ipaddress
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

A, AAAA, IN = 1, 28, 1
NOERROR, SERVFAIL, NXDOMAIN = 0, 2, 3


class DnsServer(asyncio.DatagramProtocol):
    def __init__(self, name: str, addresses: list[str]) -> None:
        self.name = name.rstrip(".").lower()
        self.addresses = addresses
        self.mode = "answer"  # or "silent", "servfail"
        self.queries = 0
        self.port = 0
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass of asyncio's

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queries += 1
        if self.mode == "silent" or self.transport is None:
            return
        reply = self.answer(data)
        if reply is not None:
            self.transport.sendto(reply, addr)

    def answer(self, query: bytes) -> bytes | None:
        if len(query) < 12:
            return None
        query_id, flags, questions = struct.unpack("!HHH", query[:6])
        if questions != 1:
            return None
        labels, offset = [], 12
        while offset < len(query) and query[offset]:
            length = query[offset]
            labels.append(query[offset + 1:offset + 1 + length].decode("ascii", "replace"))
            offset += 1 + length
        offset += 1
        qtype, qclass = struct.unpack("!HH", query[offset:offset + 4])
        question = query[12:offset + 4]
        name = ".".join(labels).lower()
        records = [ipaddress.ip_address(a) for a in self.addresses] if name == self.name else []
        rcode = SERVFAIL if self.mode == "servfail" else NOERROR if records else NXDOMAIN
        wanted = {A: 4, AAAA: 6}.get(qtype)
        rdata = [r.packed for r in records if r.version == wanted and qclass == IN] if rcode == NOERROR else []
        header = struct.pack("!HHHHHH", query_id, 0x8180 | (flags & 0x0100) | rcode, 1, len(rdata), 0, 0)
        # each answer: a pointer to the question's name (offset 12), its type, class IN, TTL 0, the address
        answers = b"".join(struct.pack("!HHHIH", 0xC00C, qtype, IN, 0, len(data)) + data for data in rdata)
        return header + question + answers


@asynccontextmanager
async def dns_server(name: str, addresses: list[str]) -> AsyncIterator[DnsServer]:
    """A ``DnsServer`` for ``name`` listening for the block; ``server.addresses`` is the list given (mutable)."""
    server = DnsServer(name, addresses)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(lambda: server,
                                                                             local_addr=("127.0.0.1", 0))
    server.port = transport.get_extra_info("sockname")[1]
    try:
        yield server
    finally:
        transport.close()

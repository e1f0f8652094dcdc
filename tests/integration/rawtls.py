"""Hand-made TLS bytes for hostile-client tests: ClientHellos with legacy
versions, chosen suites or lying lengths, and a reader that returns the
records (alerts) a server sent back until it closed."""
import os
import socket
import struct
import time

ALERT, HANDSHAKE = 21, 22
# Alert descriptions (RFC 8446 §6)
HANDSHAKE_FAILURE, RECORD_OVERFLOW, DECODE_ERROR = 40, 22, 50
PROTOCOL_VERSION, NO_RENEGOTIATION, ILLEGAL_PARAMETER = 70, 100, 47

AEAD_SUITES_12 = [0xC02B, 0xC02F, 0xC02C, 0xC030, 0xCCA9, 0xCCA8]
CBC_SUITES = [0xC009, 0xC013, 0xC00A, 0xC014, 0xC023, 0xC027, 0x002F, 0x0035, 0x003C, 0x000A]
NULL_SUITES = [0x0000, 0x0001, 0x0002, 0x003B, 0xC006, 0xC010]
EXPORT_SUITES = [0x0003, 0x0006, 0x0008, 0x0014]


def ext(etype, body):
    return struct.pack("!HH", etype, len(body)) + body


def _vec16(items):
    body = b"".join(struct.pack("!H", i) for i in items)
    return struct.pack("!H", len(body)) + body


def default_extensions(host=b"localhost"):
    sni = struct.pack("!BH", 0, len(host)) + host
    return [
        ext(0, struct.pack("!H", len(sni)) + sni),           # server_name
        ext(10, _vec16([0x001D, 0x0017, 0x0018])),             # supported_groups
        ext(11, b"\x01\x00"),                                  # ec_point_formats: uncompressed
        ext(13, _vec16([0x0403, 0x0804, 0x0401, 0x0503])),     # signature_algorithms
    ]


def client_hello(version=0x0303, record_version=0x0301, suites=AEAD_SUITES_12,
                 compression=b"\x00", extensions=None, raw_ext_block=None):
    """A ClientHello record. extensions=None: the defaults; raw_ext_block: the
    exact bytes after the compression methods (lengths may lie)."""
    body = struct.pack("!H", version) + os.urandom(32) + b"\x00"
    body += _vec16(suites) + bytes([len(compression)]) + compression
    if raw_ext_block is not None:
        body += raw_ext_block
    else:
        exts = b"".join(default_extensions() if extensions is None else extensions)
        body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return record(HANDSHAKE, hs, record_version)


def record(ctype, payload, version=0x0303):
    return struct.pack("!BHH", ctype, version, len(payload)) + payload


def read_records(sock, timeout=10):
    """Everything the server sends until it closes (FIN or RST) or timeout,
    as a list of (content_type, payload); plus how it ended."""
    sock.settimeout(0.5)
    data, end, deadline = b"", "timeout", time.time() + timeout
    while time.time() < deadline:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            end = "reset"
            break
        if not chunk:
            end = "eof"
            break
        data += chunk
    records = []
    while len(data) >= 5:
        ctype, _, n = struct.unpack("!BHH", data[:5])
        records.append((ctype, data[5:5 + n]))
        data = data[5 + n:]
    return records, end


def alerts(records):
    """(level, description) of every plaintext alert record."""
    return [(p[0], p[1]) for t, p in records if t == ALERT and len(p) == 2]


def server_hello(records):
    """The ServerHello's fields we care about: version, suite, compression."""
    for t, p in records:
        if t == HANDSHAKE and p[:1] == b"\x02":
            body = p[4:]
            sid_len = body[34]
            at = 35 + sid_len
            suite, comp = struct.unpack("!HB", body[at:at + 3])
            return {"version": struct.unpack("!H", body[:2])[0], "suite": suite,
                    "compression": comp}
    return None


def send_and_read(port, data, close_write=False, timeout=10):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(data)
    if close_write:
        s.shutdown(socket.SHUT_WR)
    try:
        return read_records(s, timeout)
    finally:
        s.close()

"""Real TLS clients for the tests: Python ssl, driven from one thread (an
OpenSSL connection must never be used by two threads at once)."""
import hashlib
import os
import selectors
import socket
import ssl
import threading
import time


def context(pki, cert="client", version=None, ciphers=None, chain=True):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{pki}/root-ca.crt")
    if cert:
        ctx.load_cert_chain(f"{pki}/{cert}-chain.crt" if chain else f"{pki}/{cert}.crt",
                            f"{pki}/{cert}.key")
    if version:
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers)
    return ctx


def connect(ctx, port, host="127.0.0.1", timeout=10, session=None, sni="localhost"):
    raw = socket.create_connection((host, port), timeout=timeout)
    return ctx.wrap_socket(raw, server_hostname=sni, session=session)


def refusal(ctx, port, host="127.0.0.1", sni="localhost"):
    """Connects, sends a byte and returns the SSLError the server's alert
    raised (TLS 1.3 clients only see it on their first read)."""
    try:
        s = connect(ctx, port, host, sni=sni)
        s.sendall(b"x")
        data = s.recv(1)
        s.close()
        return f"no alert (read {data!r})"
    except ssl.SSLError as e:
        return str(e)
    except OSError as e:
        return f"OSError: {e}"


def echo_transfer(ctx, port, nbytes, timeout=120, session=None, sni="localhost"):
    """Sends nbytes of random data while reading the echo; returns
    (sent digest == received digest and all bytes came back, ssl socket info)."""
    s = connect(ctx, port, session=session, sni=sni)
    s.setblocking(False)
    chunk = os.urandom(min(1 << 16, nbytes))
    sent = got = 0
    tx, rx = hashlib.sha256(), hashlib.sha256()
    sel = selectors.DefaultSelector()
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    deadline = time.time() + timeout
    eof = False
    while got < nbytes and not eof and time.time() < deadline:
        for _, ev in sel.select(1):
            if ev & selectors.EVENT_WRITE and sent < nbytes:
                piece = chunk[:min(len(chunk), nbytes - sent)]
                try:
                    n = s.send(piece)
                    tx.update(piece[:n])
                    sent += n
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass
                if sent >= nbytes:
                    sel.modify(s, selectors.EVENT_READ)
            if ev & selectors.EVENT_READ:
                got, eof = _read_all(s, rx, got)
    info = {"version": s.version(), "cipher": s.cipher()[0], "session": s.session,
            "reused": s.session_reused, "peer_cert": s.getpeercert(binary_form=True)}
    sel.close()
    s.close()
    return got == nbytes == sent and tx.digest() == rx.digest(), info


def _read_all(s, digest, got):
    try:
        while True:
            d = s.recv(1 << 16)
            if not d:
                return got, True
            digest.update(d)
            got += len(d)
    except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
        return got, False


def half_close_exchange(ctx, port, payload, timeout=30):
    """Sends payload, then close_notify while keeping TCP open for reading
    (a TLS half-close), and returns everything the server sends back until
    its own close_notify or FIN. Uses MemoryBIOs: ssl.SSLSocket.unwrap()
    insists on reading the peer's close_notify first."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")

    def pump(call):
        while True:
            try:
                result = call()
                sock.sendall(outgoing.read())
                return result
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                data = sock.recv(1 << 16)
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)

    pump(obj.do_handshake)
    view = memoryview(payload)
    while view:
        n = pump(lambda: obj.write(view[:1 << 14]))
        view = view[n:]
    try:
        obj.unwrap()  # queues close_notify; wants to read the peer's
    except ssl.SSLWantReadError:
        pass
    sock.sendall(outgoing.read())
    reply = b""
    while True:
        try:
            chunk = pump(lambda: obj.read(1 << 16))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        reply += chunk
    sock.close()
    return reply


def concurrent_echo(ctx, port, n, nbytes, timeout, join_timeout):
    """n echo_transfers at once, each on its own thread: [True, ...] when
    every one came back byte-exact, else the failures (an exception's repr)."""
    results = [None] * n

    def one(i):
        try:
            results[i] = echo_transfer(ctx, port, nbytes, timeout=timeout)[0]
        except Exception as e:  # recorded for the caller's assertion
            results[i] = repr(e)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(join_timeout)
    return results

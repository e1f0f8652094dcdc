"""A TLS client driven through libssl with ctypes, for what Python's ssl
module cannot do: send TLS 1.3 KeyUpdate messages on demand."""
import ctypes
import socket
import struct

_ssl = ctypes.CDLL("libssl.so.3")
_P = ctypes.c_void_p
for name, res, args in [
    ("TLS_client_method", _P, []),
    ("SSL_CTX_new", _P, [_P]),
    ("SSL_CTX_free", None, [_P]),
    ("SSL_CTX_use_certificate_chain_file", ctypes.c_int, [_P, ctypes.c_char_p]),
    ("SSL_CTX_use_PrivateKey_file", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
    ("SSL_CTX_load_verify_locations", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_char_p]),
    ("SSL_CTX_ctrl", ctypes.c_long, [_P, ctypes.c_int, ctypes.c_long, _P]),
    ("SSL_new", _P, [_P]),
    ("SSL_free", None, [_P]),
    ("SSL_set_fd", ctypes.c_int, [_P, ctypes.c_int]),
    ("SSL_connect", ctypes.c_int, [_P]),
    ("SSL_key_update", ctypes.c_int, [_P, ctypes.c_int]),
    ("SSL_do_handshake", ctypes.c_int, [_P]),
    ("SSL_write", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
    ("SSL_read", ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_int]),
    ("SSL_get_error", ctypes.c_int, [_P, ctypes.c_int]),
]:
    fn = getattr(_ssl, name)
    fn.restype, fn.argtypes = res, args

SSL_CTRL_SET_MIN_PROTO_VERSION = 123
TLS1_3_VERSION = 0x0304
SSL_KEY_UPDATE_REQUESTED = 1


class Client:
    def __init__(self, pki, port):
        self.ctx = _ssl.SSL_CTX_new(_ssl.TLS_client_method())
        assert _ssl.SSL_CTX_use_certificate_chain_file(self.ctx, f"{pki}/client-chain.crt".encode()) == 1
        assert _ssl.SSL_CTX_use_PrivateKey_file(self.ctx, f"{pki}/client.key".encode(), 1) == 1
        assert _ssl.SSL_CTX_load_verify_locations(self.ctx, f"{pki}/root-ca.crt".encode(), None) == 1
        _ssl.SSL_CTX_ctrl(self.ctx, SSL_CTRL_SET_MIN_PROTO_VERSION, TLS1_3_VERSION, None)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        # libssl needs a blocking fd; kernel-level timeouts keep it bounded
        # (a stuck write fails with EAGAIN instead of hanging the test).
        self.sock.settimeout(None)
        tv = struct.pack("ll", 2, 0)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
        self.ssl = _ssl.SSL_new(self.ctx)
        _ssl.SSL_set_fd(self.ssl, self.sock.fileno())
        assert _ssl.SSL_connect(self.ssl) == 1

    def write(self, data):
        return _ssl.SSL_write(self.ssl, data, len(data))

    def read(self, n):
        buf = ctypes.create_string_buffer(n)
        r = _ssl.SSL_read(self.ssl, buf, n)
        return buf.raw[:r] if r > 0 else b""

    def key_update(self):
        """Sends one KeyUpdate asking the server to update its keys too.
        Returns False once the connection is gone."""
        if _ssl.SSL_key_update(self.ssl, SSL_KEY_UPDATE_REQUESTED) != 1:
            return False
        return _ssl.SSL_do_handshake(self.ssl) == 1

    def close(self):
        _ssl.SSL_free(self.ssl)
        _ssl.SSL_CTX_free(self.ctx)
        self.sock.close()

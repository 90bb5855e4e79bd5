#!/usr/bin/env python3
"""Minimal iSCSI discovery probe for the lab (stdlib only; not part of rsiscsi).

Logs in with SessionType=Discovery (optionally one-way CHAP with MD5), sends SendTargets=All and
prints one TargetName per line. It exists because libiscsi's iscsi-ls hangs against istgt, so the
lab needs its own independent way to check istgt's discovery portals, including discovery CHAP.

Exit status: 0 discovery worked (and every --expect target was listed), 2 the target rejected the
login (status class/detail printed), 3 an --expect target was missing, 1 any other failure.
"""
import argparse
import hashlib
import os
import socket
import struct
import sys

BHS_LEN = 48
OP_LOGIN_REQ, OP_TEXT_REQ, OP_LOGOUT_REQ = 0x03, 0x04, 0x06
OP_LOGIN_RSP, OP_TEXT_RSP, OP_LOGOUT_RSP = 0x23, 0x24, 0x26
IMMEDIATE = 0x40
INITIATOR = "iqn.2024-01.lab.rsiscsi:discovery-probe"


class LoginRejected(Exception):
    pass


def keys_to_bytes(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def bytes_to_keys(data):
    out = []
    for item in data.split(b"\0"):
        if item:
            k, _, v = item.decode(errors="replace").partition("=")
            out.append((k, v))
    return out


class Conn:
    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.cmdsn = 1
        self.expstatsn = 0
        self.isid = b"\x80" + os.urandom(3) + b"\x00\x00"  # RFC 7143 §11.12.5: random qualifier
        self.tsih = 0

    def send(self, bhs, data=b""):
        bhs[5:8] = len(data).to_bytes(3, "big")
        pad = (-len(data)) % 4
        self.sock.sendall(bytes(bhs) + data + b"\0" * pad)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("target closed the connection")
            buf += chunk
        return buf

    def recv(self):
        bhs = self.recv_exact(BHS_LEN)
        ahs_len = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        self.recv_exact(ahs_len)
        data = self.recv_exact(dlen + ((-dlen) % 4))[:dlen]
        statsn = struct.unpack(">I", bhs[24:28])[0]
        self.expstatsn = (statsn + 1) & 0xFFFFFFFF
        return bhs, data

    def login_pdu(self, csg, nsg, transit, pairs):
        bhs = bytearray(BHS_LEN)
        bhs[0] = IMMEDIATE | OP_LOGIN_REQ
        bhs[1] = (0x80 if transit else 0) | (csg << 2) | (nsg if transit else 0)
        bhs[8:14] = self.isid
        bhs[14:16] = self.tsih.to_bytes(2, "big")
        bhs[16:20] = (1).to_bytes(4, "big")  # ITT
        bhs[24:28] = self.cmdsn.to_bytes(4, "big")
        bhs[28:32] = self.expstatsn.to_bytes(4, "big")
        self.send(bhs, keys_to_bytes(pairs))
        rsp, data = self.recv()
        if rsp[0] & 0x3F != OP_LOGIN_RSP:
            raise ConnectionError(f"expected a Login Response, got opcode 0x{rsp[0] & 0x3F:02x}")
        if rsp[36] != 0:
            raise LoginRejected(f"status class {rsp[36]} detail {rsp[37]} (0x{rsp[36]:02x}{rsp[37]:02x})")
        self.tsih = int.from_bytes(rsp[14:16], "big")
        return rsp, dict(bytes_to_keys(data))

    def login(self, user, secret):
        base = [("InitiatorName", INITIATOR), ("SessionType", "Discovery")]
        if user is None:
            rsp, _ = self.login_pdu(0, 1, True, base + [("AuthMethod", "None")])
        else:
            _, keys = self.login_pdu(0, 1, False, base + [("AuthMethod", "CHAP")])
            if keys.get("AuthMethod") != "CHAP":
                raise ConnectionError(f"target chose AuthMethod={keys.get('AuthMethod')}")
            _, keys = self.login_pdu(0, 1, False, [("CHAP_A", "5")])
            if keys.get("CHAP_A") != "5":
                raise ConnectionError(f"target chose CHAP_A={keys.get('CHAP_A')}, the probe only does MD5")
            ident = int(keys["CHAP_I"])
            challenge = bytes.fromhex(keys["CHAP_C"][2:])
            # RFC 1994 §4.1 / RFC 7143 §12.1.3: MD5(identifier || secret || challenge)
            resp = hashlib.md5(bytes([ident]) + secret.encode() + challenge).hexdigest()
            rsp, _ = self.login_pdu(0, 1, True, [("CHAP_N", user), ("CHAP_R", "0x" + resp)])
        # Operational stage until the target agrees to go to full-feature phase.
        ops = [("HeaderDigest", "None"), ("DataDigest", "None"), ("MaxRecvDataSegmentLength", "65536")]
        for _ in range(4):
            if rsp[1] & 0x80 and rsp[1] & 0x03 == 3:
                return
            rsp, _ = self.login_pdu(1, 3, True, ops)
            ops = []
        raise ConnectionError("target never moved to full-feature phase")

    def send_targets(self):
        data_out = keys_to_bytes([("SendTargets", "All")])
        ttt = 0xFFFFFFFF
        collected = b""
        for _ in range(64):
            bhs = bytearray(BHS_LEN)
            bhs[0] = OP_TEXT_REQ  # not immediate: istgt advances ExpCmdSN even for immediate Text
            bhs[1] = 0x80
            bhs[16:20] = (2).to_bytes(4, "big")
            bhs[20:24] = ttt.to_bytes(4, "big")
            bhs[24:28] = self.cmdsn.to_bytes(4, "big")
            bhs[28:32] = self.expstatsn.to_bytes(4, "big")
            self.send(bhs, data_out)
            self.cmdsn += 1
            rsp, data = self.recv()
            if rsp[0] & 0x3F != OP_TEXT_RSP:
                raise ConnectionError(f"expected a Text Response, got opcode 0x{rsp[0] & 0x3F:02x}")
            collected += data
            if rsp[1] & 0x80:
                return bytes_to_keys(collected)
            ttt = int.from_bytes(rsp[20:24], "big")
            data_out = b""
        raise ConnectionError("Text Response never completed")

    def logout(self):
        bhs = bytearray(BHS_LEN)
        bhs[0] = IMMEDIATE | OP_LOGOUT_REQ
        bhs[1] = 0x80  # reason 0: close the session
        bhs[16:20] = (3).to_bytes(4, "big")
        bhs[24:28] = self.cmdsn.to_bytes(4, "big")
        bhs[28:32] = self.expstatsn.to_bytes(4, "big")
        try:
            self.send(bhs)
            self.recv()
        except OSError:
            pass
        self.sock.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("portal", help="HOST:PORT, e.g. 127.0.0.1:3262")
    ap.add_argument("--user", help="CHAP user name (omit for AuthMethod=None)")
    ap.add_argument("--secret-env", default="PROBE_CHAP_SECRET",
                    help="environment variable holding the CHAP secret (default PROBE_CHAP_SECRET)")
    ap.add_argument("--expect", action="append", default=[], help="IQN that must be listed")
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    host, _, port = args.portal.rpartition(":")
    secret = None
    if args.user is not None:
        secret = os.environ.get(args.secret_env)
        if secret is None:
            print(f"--user needs the secret in ${args.secret_env}", file=sys.stderr)
            return 1
    try:
        conn = Conn(host.strip("[]"), int(port), args.timeout)
        conn.login(args.user, secret)
        keys = conn.send_targets()
        conn.logout()
    except LoginRejected as e:
        print(f"login rejected: {e}", file=sys.stderr)
        return 2
    except (OSError, ConnectionError, KeyError, ValueError) as e:
        print(f"discovery failed: {e}", file=sys.stderr)
        return 1
    names = [v for k, v in keys if k == "TargetName"]
    for n in names:
        print(n)
    missing = [t for t in args.expect if t not in names]
    if missing:
        print(f"missing targets: {' '.join(missing)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())

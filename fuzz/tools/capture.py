#!/usr/bin/env python3
"""Record real iSCSI traffic and turn it into fuzz seeds.

Two steps (see fuzz/README.md, "Seed corpora from real captures"):

  capture.py relay LISTEN_PORT TARGET_HOST:TARGET_PORT RAW_DIR
      A TCP relay on 127.0.0.1:LISTEN_PORT that forwards every connection
      to the target and writes each direction of connection N to
      RAW_DIR/<label>-N.i2t and .t2i (label = the target's port). Runs until
      killed. Point the rsiscsi CLI at 127.0.0.1:LISTEN_PORT.

  capture.py split RAW_DIR CORPUS_DIR
      Cuts each recorded stream into PDUs (RFC 7143 §11: BHS, AHS, header
      digest, padded data segment, data digest; digests only after the login
      phase, as negotiated) and writes seeds in each fuzz target's input
      layout into CORPUS_DIR/{pdu_decoder,text_keys,negotiation,send_targets}.
      File names are the SHA-1 of the content, as libFuzzer names them.

Only the Python standard library is used.
"""

import hashlib
import os
import socket
import sys
import threading

# --- relay ------------------------------------------------------------------


def pump(src, dst, log):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            log.write(data)
            log.flush()
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def relay(listen_port, target, raw_dir):
    host, port = target.rsplit(":", 1)
    os.makedirs(raw_dir, exist_ok=True)
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", int(listen_port)))
    lsock.listen(16)
    n = 0
    while True:
        client, _ = lsock.accept()
        n += 1
        server = socket.create_connection((host.strip("[]"), int(port)))
        base = os.path.join(raw_dir, f"{port}-{n:04d}")
        i2t = open(base + ".i2t", "wb")
        t2i = open(base + ".t2i", "wb")
        threading.Thread(target=pump, args=(client, server, i2t), daemon=True).start()
        threading.Thread(target=pump, args=(server, client, t2i), daemon=True).start()


# --- split ------------------------------------------------------------------

LOGIN_REQ, TEXT_REQ = 0x03, 0x04
LOGIN_RSP, TEXT_RSP = 0x23, 0x24


def pad4(n):
    return (n + 3) & ~3


def pdus(stream, digests):
    """Yields (bhs, data, raw, (header_digest, data_digest)) for each whole
    PDU; digests(bhs) gives the digest flags in force for that PDU."""
    pos = 0
    while pos + 48 <= len(stream):
        bhs = stream[pos:pos + 48]
        ahs = bhs[4] * 4
        dlen = int.from_bytes(bhs[5:8], "big")
        hd, dd = digests(bhs)
        start = pos + 48 + ahs + (4 if hd else 0)
        end = start + pad4(dlen)
        total = end + (4 if dd and dlen else 0)
        if total > len(stream):
            break
        yield bhs, stream[start:start + dlen], stream[pos:total], (hd, dd)
        pos = total


def text_of(data):
    pairs = {}
    for item in data.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            pairs[k.decode("latin-1")] = v.decode("latin-1")
    return pairs


class Phase:
    """Login phase tracking for one direction: no digests until the PDU
    after the one with T=1 and NSG=3 (full feature phase)."""

    def __init__(self, login_opcode, negotiated):
        self.login_opcode = login_opcode
        self.negotiated = negotiated
        self.ffp = False

    def __call__(self, bhs):
        flags = (self.negotiated["hd"], self.negotiated["dd"]) if self.ffp else (False, False)
        if bhs[0] & 0x3F == self.login_opcode and bhs[1] & 0x80 and bhs[1] & 0x03 == 3:
            self.ffp = True
        return flags


def joined_texts(items, opcode):
    """Data of PDUs with `opcode`, joined over the C bit (0x40)."""
    out, cur = [], b""
    for bhs, data, _, _ in items:
        if bhs[0] & 0x3F != opcode:
            continue
        cur += data
        if not bhs[1] & 0x40:
            out.append(cur)
            cur = b""
    return out


def write_seed(corpus, target, content):
    d = os.path.join(corpus, target)
    os.makedirs(d, exist_ok=True)
    name = hashlib.sha1(content).hexdigest()
    with open(os.path.join(d, name), "wb") as f:
        f.write(content)


def split(raw_dir, corpus):
    bases = sorted({f.rsplit(".", 1)[0] for f in os.listdir(raw_dir) if f.endswith((".i2t", ".t2i"))})
    for base in bases:
        i2t = open(os.path.join(raw_dir, base + ".i2t"), "rb").read()
        t2i = open(os.path.join(raw_dir, base + ".t2i"), "rb").read()
        # Negotiated digests: the target's answers in the login phase.
        neg = {"hd": False, "dd": False}
        t_items = list(pdus(t2i, Phase(LOGIN_RSP, neg)))
        for bhs, data, _, _ in t_items:
            if bhs[0] & 0x3F == LOGIN_RSP:
                keys = text_of(data)
                if "HeaderDigest" in keys:
                    neg["hd"] = keys["HeaderDigest"] == "CRC32C"
                if "DataDigest" in keys:
                    neg["dd"] = keys["DataDigest"] == "CRC32C"
        # Re-split now that the digests are known.
        t_items = list(pdus(t2i, Phase(LOGIN_RSP, neg)))
        i_items = list(pdus(i2t, Phase(LOGIN_REQ, neg)))

        # pdu_decoder: byte 0 = digests, limit 8192 (index 7), whole-input
        # chunks (index 7) or 1-byte chunks (index 0) for the login phase.
        for bhs, data, raw, (hd, dd) in t_items:
            if len(data) > 8192:
                continue
            sel = int(hd) | int(dd) << 1 | 7 << 2 | 7 << 5
            write_seed(corpus, "pdu_decoder", bytes([sel]) + raw)
        login = b"".join(raw for bhs, _, raw, fl in t_items if fl == (False, False))
        if login:
            write_seed(corpus, "pdu_decoder", bytes([7 << 2]) + login)

        # text_keys: every login/text data segment, whole, and cut in three.
        texts = []
        for items, ops in ((i_items, (LOGIN_REQ, TEXT_REQ)), (t_items, (LOGIN_RSP, TEXT_RSP))):
            for op in ops:
                texts += joined_texts(items, op)
        for t in texts:
            if t:
                write_seed(corpus, "text_keys", b"\0" + t)
                write_seed(corpus, "text_keys", b"\x02\x55\xaa" + t)

        # negotiation: byte 0 = leading | discovery << 1; the target's
        # operational-stage (CSG=1) login answers, separated by 0xff.
        first = next((b for b, _, _, _ in i_items if b[0] & 0x3F == LOGIN_REQ), None)
        if first is not None:
            req_keys = {}
            for t in joined_texts(i_items, LOGIN_REQ):
                req_keys.update(text_of(t))
            leading = int.from_bytes(first[14:16], "big") == 0
            discovery = req_keys.get("SessionType") == "Discovery"
            answers = [d for b, d, _, _ in t_items if b[0] & 0x3F == LOGIN_RSP and (b[1] >> 2) & 3 == 1]
            if answers:
                write_seed(corpus, "negotiation", bytes([int(leading) | int(discovery) << 1]) + b"\xff".join(answers))

        # send_targets: the SendTargets answers.
        for t in joined_texts(t_items, TEXT_RSP):
            if b"TargetName=" in t:
                write_seed(corpus, "send_targets", t)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "relay":
        relay(*sys.argv[2:])
    elif len(sys.argv) == 4 and sys.argv[1] == "split":
        split(*sys.argv[2:])
    else:
        sys.exit(__doc__)

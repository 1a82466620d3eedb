#!/usr/bin/env python3
"""mount_writer.py — the crash tests' writer (tests layer).

Writes 4 KiB blocks at distinct offsets of a file or an NBD export, each
followed by fsync() (NBD: flush), and logs a block ("OFFSET ROUND INDEX")
only after that has returned, so every logged block is one the server
acknowledged as durable.
Blocks carry their own offset, round and index, so a reader can tell a
block from any other.

  mount_writer.py write FILE|URI LOG SEED ROUND COUNT   (until COUNT or an error)
  mount_writer.py verify FILE|URI LOG                   (every logged block reads back)
"""
import os
import random
import struct
import sys

BLOCK = 4096


def block(off, rnd, idx):
    return struct.pack("<QII", off, rnd, idx) * (BLOCK // 16)


def offsets(seed, size):
    """Distinct, non-overlapping block offsets, shuffled; rounds take
    consecutive slices.  Each block owns an 8 KiB slot; in odd slots it
    sits one sector in, so some writes straddle grain boundaries."""
    nr = size // (2 * BLOCK) - 1
    order = list(range(nr))
    random.Random(seed).shuffle(order)
    return [k * 2 * BLOCK + (512 if k % 2 else 0) for k in order]


class Target:
    """A file (pwrite + fsync) or an NBD export (an nbd:// or nbd+unix://
    URI, through libnbd: pwrite + flush)."""

    def __init__(self, path, write):
        self.nbd = path.startswith("nbd")
        if self.nbd:
            import nbd
            self.h = nbd.NBD()
            self.h.connect_uri(path)
            self.size = self.h.get_size()
            self.errors = (OSError, nbd.Error)
        else:
            self.fd = os.open(path, os.O_RDWR if write else os.O_RDONLY)
            self.size = os.fstat(self.fd).st_size
            self.errors = (OSError,)

    def write_durably(self, data, off):
        if self.nbd:
            self.h.pwrite(data, off)
            self.h.flush()
        else:
            os.pwrite(self.fd, data, off)
            os.fsync(self.fd)

    def read(self, n, off):
        return self.h.pread(n, off) if self.nbd else os.pread(self.fd, n, off)


def write(path, log, seed, rnd, count):
    t = Target(path, True)
    offs = offsets(seed, t.size)[rnd * count:(rnd + 1) * count]
    with open(log, "a") as lg:
        for idx, off in enumerate(offs):
            try:
                t.write_durably(block(off, rnd, idx), off)
            except t.errors:
                return 0  # the server died: expected
            lg.write("%d %d %d\n" % (off, rnd, idx))
            lg.flush()
            os.fsync(lg.fileno())
    return 0


def verify(path, log):
    t = Target(path, False)
    bad = n = 0
    for line in open(log):
        off, rnd, idx = map(int, line.split())
        n += 1
        if t.read(BLOCK, off) != block(off, rnd, idx):
            bad += 1
            print("lost: block at %d (round %d, write %d)" % (off, rnd, idx))
    print("%d acknowledged writes checked, %d lost" % (n, bad))
    return 1 if bad else 0


if __name__ == "__main__":
    a = sys.argv
    if a[1] == "write":
        sys.exit(write(a[2], a[3], int(a[4]), int(a[5]), int(a[6])))
    sys.exit(verify(a[2], a[3]))

#!/usr/bin/env python3
"""hostile_gen.py - hostile VMDK generator for tests/shell/test_hostile.sh
(tests layer).  Writes, into the directory given as argv[1], small extent
files whose metadata regions overlap each other or whose directories name
one table from every entry, plus a valid base of each format as a control.
Built from the format reference (vmdk-format.md), independently of the
library's own code.

Prints one line per disk:  NAME<TAB>CLASS<TAB>WORDS<TAB>EXTENT
  CLASS  ok       a valid control
         overlap  regions overlap: rw open refused, ro warns, check errors
         overlap-ro  the same for a version 3 file (refused rw anyway)
         amplify  a huge claimed disk over one shared table (also overlap)
  WORDS  '|'-separated phrases the messages must contain ('-': none)
  EXTENT the extent file (NAME itself, or for COWD the extent a small
         descriptor NAME points at)
"""
import os
import struct
import sys
import zlib

S = 512


def put32(buf, off, v):
    struct.pack_into('<I', buf, off, v)


def kdmv_header(cap, grain, desc_off, desc_size, gtes, rgd, gd, overhead,
                flags=3, version=1, compress=0):
    h = bytearray(S)
    struct.pack_into('<4sIIQQQQIQQQB4sH', h, 0, b'KDMV', version, flags, cap,
                     grain, desc_off, desc_size, gtes, rgd, gd, overhead, 0,
                     b'\n \r\n', compress)
    return h


def descriptor(name, sectors, create_type, kind):
    return ('# Disk DescriptorFile\nversion=1\nCID=12345678\n'
            'parentCID=ffffffff\ncreateType="%s"\n\n# Extent description\n'
            'RW %d %s "%s"\n\n# The Disk Data Base\n#DDB\n\n'
            'ddb.virtualHWVersion = "4"\n' % (create_type, sectors, kind, name)
            ).encode()


# ---- hosted sparse (KDMV) --------------------------------------------------
# header s0, descriptor s1..s20, RGD s21, RGTs s22..s37, GD s38, GTs
# s39..s54, overHead 56; grain 8 sectors; 4 tables of 512; grain 0 of
# table 0 at s56 ('A'), grain 0 of table 1 at s64 ('B').
K_CAP, K_GRAIN, K_NGD = 16384, 8, 4


def kdmv(name, version=1, rgd=True, desc_size=20, gd_patch=None,
         gte_patch=None, rgd_too=True):
    f = bytearray(72 * S)
    flags = 3 if rgd else 1
    f[0:S] = kdmv_header(K_CAP, K_GRAIN, 1, desc_size, 512, 21 if rgd else 0,
                         38, 56, flags, version)
    d = descriptor(name, K_CAP, 'monolithicSparse', 'SPARSE')
    f[S:S + len(d)] = d
    gd = [39 + 4 * i for i in range(K_NGD)]
    rgdv = [22 + 4 * i for i in range(K_NGD)]
    for i, v in (gd_patch or {}).items():
        gd[i] = v
        rgdv[i] = v if rgd and rgd_too else rgdv[i]
    for i in range(K_NGD):
        put32(f, 38 * S + 4 * i, gd[i])
        if rgd:
            put32(f, 21 * S + 4 * i, rgdv[i])
    gtes = {(0, 0): 56, (1, 0): 64}
    gtes.update(gte_patch or {})
    for (t, j), v in gtes.items():
        put32(f, (39 + 4 * t) * S + 4 * j, v)
        if rgd:
            put32(f, (22 + 4 * t) * S + 4 * j, v)
    f[56 * S:64 * S] = b'A' * (8 * S)
    f[64 * S:72 * S] = b'B' * (8 * S)
    return f


def kdmv_one_table(name):
    """64 TiB, grain 512 KiB: 262144 directory entries, all naming one
    table (1 MiB directory + 1 table + 1 grain)."""
    cap, grain = 1 << 37, 1024
    ngd = cap // (grain * 512)
    gd_sec, gt_sec, data = 21, 21 + ngd * 4 // S, 3072
    f = bytearray((data + grain) * S)
    f[0:S] = kdmv_header(cap, grain, 1, 20, 512, 0, gd_sec, data, 1)
    d = descriptor(name, cap, 'monolithicSparse', 'SPARSE')
    f[S:S + len(d)] = d
    f[gd_sec * S:gd_sec * S + ngd * 4] = struct.pack('<I', gt_sec) * ngd
    put32(f, gt_sec * S, data)
    f[data * S:] = b'G' * (grain * S)
    return f


# ---- streamOptimized ------------------------------------------------------
# header s0 (gdOffset real, no footer), descriptor s1..s20, overHead 64;
# grain 0 (marker + zlib) at s64, then GT markers + tables, GD marker + GD,
# EOS.  64 MiB: 2 tables of 512 grains of 64 KiB.
def marker(value, size, mtype):
    m = bytearray(S)
    struct.pack_into('<QII', m, 0, value, size, mtype)
    return m


def stream(name, desc_size=20, gd_patch=None, cap=131072, grain=128,
           one_table=False):
    ngd = cap // (grain * 512)
    f = bytearray(64 * S)
    d = descriptor(name, cap, 'streamOptimized', 'SPARSE')
    f[S:S + len(d)] = d
    z = zlib.compress(b'A' * (grain * S))
    g = bytearray(struct.pack('<QI', 0, len(z)) + z)
    g += bytes(-len(g) % S)
    grain0 = len(f) // S
    f += g
    tables = []
    for i in range(1 if one_table else ngd):
        f += marker(4, 0, 1)
        tables.append(len(f) // S)
        gt = bytearray(4 * S)
        if i == 0:
            put32(gt, 0, grain0)
        f += gt
    gd_sectors = (ngd * 4 + S - 1) // S
    f += marker(gd_sectors, 0, 2)
    gd_sec = len(f) // S
    gd = [tables[0]] * ngd if one_table else list(tables)
    for i, v in (gd_patch or {}).items():
        gd[i] = gd_sec if v == 'gd' else tables[v] if v >= 0 else v
    raw = bytearray(gd_sectors * S)
    for i, v in enumerate(gd):
        put32(raw, 4 * i, v)
    f += raw
    f += bytearray(S)  # EOS
    f[0:S] = kdmv_header(cap, grain, 1, desc_size, 512, 0, gd_sec, 64,
                         0x30001, 3, 1)
    return f


# ---- COWD (vmfsSparse) ----------------------------------------------------
# 2048-byte header, GD at s4 (4 entries), GT0 at s5..s36 (4096 entries),
# grain 1 sector; grain 3 at s37 ('C'), grain 4095 at s38 ('D').
def cowd(gd_patch=None, gte_patch=None, sectors=39, cap=16384, ngd=4,
         gd_at=4):
    f = bytearray(sectors * S)
    f[0:4] = b'COWD'
    for off, v in ((4, 1), (8, 3), (12, cap), (16, 1), (20, gd_at), (24, ngd),
                   (28, sectors)):
        put32(f, off, v)
    gd = [5] + [0] * (ngd - 1)
    for i, v in (gd_patch or {}).items():
        gd[i] = v
    f[gd_at * S:gd_at * S + 4 * ngd] = struct.pack('<%dI' % ngd, *gd)
    gtes = {3: 37, 4095: 38}
    gtes.update(gte_patch or {})
    for j, v in gtes.items():
        put32(f, 5 * S + 4 * j, v)
    f[37 * S:38 * S] = b'C' * S
    f[38 * S:39 * S] = b'D' * S
    return f


def cowd_one_table():
    """~2 TiB of 4 KiB grains: 131072 directory entries, all naming one
    table (512 KiB directory + one 16 KiB table; a private table copy per
    entry would be 2 GiB)."""
    cap, grain = 0xFFFFF000, 8
    ngd = -(-cap // (4096 * grain))
    gt = 4 + (ngd * 4 + S - 1) // S
    f = bytearray((gt + 32 + grain) * S)
    f[0:4] = b'COWD'
    for off, v in ((4, 1), (8, 3), (12, cap), (16, grain), (20, 4), (24, ngd),
                   (28, gt + 32 + grain)):
        put32(f, off, v)
    f[4 * S:4 * S + 4 * ngd] = struct.pack('<I', gt) * ngd
    put32(f, gt * S, gt + 32)
    f[(gt + 32) * S:] = b'E' * (grain * S)
    return f


def main():
    out = sys.argv[1]
    files = [
        ('k-base.vmdk', 'ok', '', kdmv('k-base.vmdk')),
        ('k-base-norgd.vmdk', 'ok', '', kdmv('k-base-norgd.vmdk', rgd=False)),
        ('k-desc-over-gd.vmdk', 'overlap', 'descriptor area|grain directory',
         kdmv('k-desc-over-gd.vmdk', rgd=False, desc_size=40)),
        ('k-desc-over-rgd.vmdk', 'overlap',
         'descriptor area|redundant grain directory',
         kdmv('k-desc-over-rgd.vmdk', version=2, desc_size=21)),
        ('k-gt-in-desc.vmdk', 'overlap',
         'descriptor area|grain table of directory entry 2',
         kdmv('k-gt-in-desc.vmdk', rgd=False, gd_patch={2: 10})),
        ('k-gt-in-grain.vmdk', 'overlap', 'grain table of directory entry 1',
         kdmv('k-gt-in-grain.vmdk', gd_patch={1: 56}, rgd_too=False)),
        ('k-gt-over-gd.vmdk', 'overlap',
         'grain table of directory entry 1|grain directory',
         kdmv('k-gt-over-gd.vmdk', rgd=False, gd_patch={1: 38})),
        ('k-shared.vmdk', 'overlap',
         'grain table of directory entry 1|grain table of directory entry 0',
         kdmv('k-shared.vmdk', gd_patch={1: 39})),
        ('k-shared-v3.vmdk', 'overlap-ro',
         'grain table of directory entry 1|grain table of directory entry 0',
         kdmv('k-shared-v3.vmdk', version=3, gd_patch={1: 39})),
        ('k-grain-over-desc.vmdk', 'overlap', 'grain 1 at sector 2|descriptor area',
         kdmv('k-grain-over-desc.vmdk', rgd=False, gte_patch={(0, 1): 2})),
        ('k-64t-one-table.vmdk', 'amplify', 'grain table of directory entry',
         kdmv_one_table('k-64t-one-table.vmdk')),
        ('s-base.vmdk', 'ok', '', stream('s-base.vmdk')),
        ('s-desc-over-gd.vmdk', 'overlap', 'descriptor area|grain table',
         stream('s-desc-over-gd.vmdk', desc_size=76)),
        ('s-gt-over-gd.vmdk', 'overlap',
         'grain table of directory entry 1|grain directory',
         stream('s-gt-over-gd.vmdk', gd_patch={1: 'gd'})),
        ('s-shared.vmdk', 'overlap',
         'grain table of directory entry 1|grain table of directory entry 0',
         stream('s-shared.vmdk', gd_patch={1: 0})),
        ('s-64t-one-table.vmdk', 'amplify', 'grain table of directory entry',
         stream('s-64t-one-table.vmdk', cap=1 << 37, grain=1024,
                one_table=True)),
        ('c-base.vmdk', 'ok', '', cowd()),
        ('c-gt-over-gd.vmdk', 'overlap',
         'grain table of directory entry 1|grain directory',
         cowd(gd_patch={1: 4}, sectors=80)),
        ('c-shared.vmdk', 'overlap',
         'grain table of directory entry 1|grain table of directory entry 0',
         cowd(gd_patch={1: 5})),
        ('c-grain-over-header.vmdk', 'overlap', 'grain 5 at sector 2|header',
         cowd(gte_patch={5: 2})),
        ('c-gt-in-grain.vmdk', 'overlap', 'grain table of directory entry 1',
         cowd(gd_patch={1: 37}, sectors=80)),
        ('c-2t-one-table.vmdk', 'amplify', 'grain table of directory entry',
         cowd_one_table()),
    ]
    for name, cls, words, data in files:
        ext = name
        if name.startswith('c-'):  # COWD: a descriptor over the extent
            ext = name.replace('.vmdk', '-delta.vmdk')
            cap = struct.unpack_from('<I', data, 12)[0]
            with open(os.path.join(out, name), 'wb') as fh:
                fh.write(descriptor(ext, cap, 'vmfsSparse', 'VMFSSPARSE'))
        with open(os.path.join(out, ext), 'wb') as fh:
            fh.write(data)
        print('%s\t%s\t%s\t%s' % (name, cls, words or '-', ext))


if __name__ == '__main__':
    main()

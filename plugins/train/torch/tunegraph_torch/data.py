"""
Training data exactly as the tfjs trainer sees it (plugins/train/TokenData.ts,
plugins/train/Rng.ts): a Tokens directory read as arrays, a seeded visiting
order that follows from (seed, step) alone, and padded micro-batches whose
labels are unshifted (position t predicts labels[t + 1]; -100 is ignored, and
so is the step from one packed example into the next).
"""
import json
import os

import numpy as np

M32 = 0xFFFFFFFF


def _imul(a, b):
    return (a * b) & M32


def mix_seed(*words):
    """murmur3's finaliser over each word, as Rng.ts's mixSeed."""
    h = 0x9E3779B9
    for w in words:
        k = _imul(w & M32, 0xCC9E2D51)
        k = ((k << 15) | (k >> 17)) & M32
        h ^= _imul(k, 0x1B873593)
        h = ((h << 13) | (h >> 19)) & M32
        h = (_imul(h, 5) + 0xE6546B64) & M32
    h ^= h >> 16
    h = _imul(h, 0x85EBCA6B)
    h ^= h >> 13
    h = _imul(h, 0xC2B2AE35)
    h ^= h >> 16
    return h


class Rng:
    """mulberry32, as Rng.ts."""

    def __init__(self, seed):
        self.state = seed & M32

    def next_u32(self):
        self.state = (self.state + 0x6D2B79F5) & M32
        t = self.state
        t = _imul(t ^ (t >> 15), t | 1)
        t ^= (t + _imul(t ^ (t >> 7), t | 61)) & M32
        return (t ^ (t >> 14)) & M32

    def next(self):
        return self.next_u32() / 4294967296

    def permutation(self, n):
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = int(self.next() * (i + 1))
            p[i], p[j] = p[j], p[i]
        return p


class TokenDataError(Exception):
    pass


def _read_arrays(directory, packed, vocab_size, at, file, count, says):
    """One flat set of arrays (a flat Tokens directory, or one part of a sharded one), checked;
    `at` names the directory in errors and `file` names one of its files."""
    for name in ("tokens.u32", "labels.i32", "offsets.u32"):
        if not os.path.exists(os.path.join(directory, name)):
            raise TokenDataError(f"{at}: no {name} (not a Tokens directory)")
    tokens = np.fromfile(os.path.join(directory, "tokens.u32"), dtype="<u4").astype(np.int64)
    labels = np.fromfile(os.path.join(directory, "labels.i32"), dtype="<i4").astype(np.int64)
    offsets = np.fromfile(os.path.join(directory, "offsets.u32"), dtype="<u4").astype(np.int64)
    n = len(offsets) - 1
    if n < 0 or (count is not None and count != n):
        raise TokenDataError(f"{file('offsets.u32')} holds {len(offsets)} values, {says} {count}")
    if len(labels) != len(tokens):
        raise TokenDataError(f"{file('labels.i32')} has {len(labels)} values, tokens.u32 {len(tokens)}")
    if offsets[0] != 0 or offsets[-1] != len(tokens):
        raise TokenDataError(f"{file('offsets.u32')} must start at 0 and end at {len(tokens)}")
    if np.any(np.diff(offsets) < 0):
        raise TokenDataError(f"{file('offsets.u32')} decreases")
    bad = np.nonzero(tokens >= vocab_size)[0]
    if len(bad) > 0:
        raise TokenDataError(
            f"{at}: token id {tokens[bad[0]]} at position {bad[0]} is outside the model's vocabulary of {vocab_size}"
        )
    bad = np.nonzero((labels != -100) & ((labels < 0) | (labels >= vocab_size)))[0]
    if len(bad) > 0:
        raise TokenDataError(
            f"{at}: label {labels[bad[0]]} at position {bad[0]} is outside the model's vocabulary of {vocab_size}"
        )
    segments = None
    seg_file = os.path.join(directory, "segments.u32")
    if packed or os.path.exists(seg_file):
        if not os.path.exists(seg_file):
            raise TokenDataError(f"{at}: no segments.u32 (the set is packed)")
        segments = np.fromfile(seg_file, dtype="<u4").astype(np.int64)
        if len(segments) != len(tokens):
            raise TokenDataError(f"{file('segments.u32')} has {len(segments)} values, tokens.u32 {len(tokens)}")
    return tokens, labels, offsets, segments


def _read_parts(directory, meta, vocab_size):
    """Each part meta.json lists, checked, joined in order with offsets rebased to global positions."""
    parts = meta["parts"]
    if not isinstance(parts, list):
        raise TokenDataError(f'{directory}: meta.json "parts" is not a list')
    # Packed when meta.json says so or any part holds segments: then every part must.
    packed = meta.get("packed") is True or any(
        os.path.exists(os.path.join(directory, str(p.get("dir")), "segments.u32")) for p in parts
    )
    read = []
    for p in parts:
        at = os.path.join(directory, str(p.get("dir")))
        if not os.path.isdir(at):
            raise TokenDataError(f"{directory}: meta.json lists part {p.get('dir')}, which is missing")
        tokens, labels, offsets, segments = _read_arrays(
            at,
            packed,
            vocab_size,
            at,
            lambda name, at=at: os.path.join(at, name),
            p.get("count"),
            f"meta.json says the count of {p.get('dir')} is",
        )
        if len(tokens) != p.get("tokens"):
            raise TokenDataError(
                f"{os.path.join(at, 'tokens.u32')} holds {len(tokens)} tokens, meta.json says {p.get('dir')} holds {p.get('tokens')}"
            )
        read.append((tokens, labels, offsets, segments))
    count = sum(len(r[2]) - 1 for r in read)
    total = sum(len(r[0]) for r in read)
    if meta.get("count") is not None and meta["count"] != count:
        raise TokenDataError(f"{directory}: meta.json says count {meta['count']}, its parts hold {count}")
    if meta.get("tokens") is not None and meta["tokens"] != total:
        raise TokenDataError(f"{directory}: meta.json says tokens {meta['tokens']}, its parts hold {total}")
    offsets = [np.zeros(1, dtype=np.int64)]
    base = 0
    for r in read:
        offsets.append(r[2][1:] + base)
        base += len(r[0])

    def join(arrays):
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)

    return (
        join([r[0] for r in read]),
        join([r[1] for r in read]),
        np.concatenate(offsets),
        join([r[3] for r in read]) if packed else None,
    )


class TokenSet:
    """A Tokens directory, flat or sharded into the parts meta.json lists (joined in that order)."""

    def __init__(self, directory, vocab_size):
        meta_file = os.path.join(directory, "meta.json")
        if not os.path.exists(meta_file):
            raise TokenDataError(f"{directory}: no meta.json (not a Tokens directory)")
        with open(meta_file, encoding="utf-8") as fh:
            meta = json.load(fh)
        self.dir = directory
        if "parts" in meta:
            arrays = _read_parts(directory, meta, vocab_size)
        else:
            arrays = _read_arrays(
                directory,
                meta.get("packed") is True,
                vocab_size,
                directory,
                lambda name: f"{directory}: {name}",
                meta.get("count"),
                "meta.json says count",
            )
        self.tokens, self.labels, self.offsets, self.segments = arrays
        self.count = len(self.offsets) - 1
        pad = meta.get("padId")
        self.pad_id = pad if isinstance(pad, int) and pad < vocab_size else 0


class MicroBatch:
    """ids [B, S]; targets [B, S] (-1: none); segments and positions [B, S] when packed."""

    def __init__(self, ids, targets, tokens, target_count, segments=None, positions=None):
        self.ids = ids
        self.targets = targets
        self.tokens = tokens
        self.target_count = target_count
        self.segments = segments
        self.positions = positions


def make_batch(s, indices, max_seq_len):
    S = 1
    for i in indices:
        S = max(S, min(max_seq_len, int(s.offsets[i + 1] - s.offsets[i])))
    B = len(indices)
    ids = np.full((B, S), s.pad_id, dtype=np.int64)
    targets = np.full((B, S), -1, dtype=np.int64)
    packed = s.segments is not None
    segments = np.full((B, S), -1, dtype=np.int64) if packed else None
    positions = np.zeros((B, S), dtype=np.int64) if packed else None
    tokens = 0
    for b, idx in enumerate(indices):
        start = int(s.offsets[idx])
        n = min(S, int(s.offsets[idx + 1]) - start)
        tokens += n
        ids[b, :n] = s.tokens[start : start + n]
        if n > 1:
            nxt = s.labels[start + 1 : start + n]
            ok = nxt != -100
            if packed:
                seg = s.segments[start : start + n]
                ok &= seg[1:] == seg[:-1]
            targets[b, : n - 1] = np.where(ok, nxt, -1)
        if packed:
            seg = s.segments[start : start + n]
            segments[b, :n] = seg
            # Positions restart at each example of the pack.
            starts = np.zeros(n, dtype=np.int64)
            change = np.nonzero(seg[1:] != seg[:-1])[0] + 1
            starts[change] = change
            starts = np.maximum.accumulate(starts)
            positions[b, :n] = np.arange(n) - starts
            positions[b, n:] = np.arange(S - n)
    target_count = int((targets >= 0).sum())
    return MicroBatch(ids, targets, tokens, target_count, segments, positions)


class BatchPlan:
    """Epoch after epoch, each a seeded permutation; micro-batch k takes positions [k·B, (k+1)·B)."""

    def __init__(self, count, batch_size, seed):
        self.count = count
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = -1
        self.perm = []

    def indices(self, micro):
        out = []
        for p in range(micro * self.batch_size, (micro + 1) * self.batch_size):
            e = p // self.count
            if e != self.epoch:
                self.epoch = e
                self.perm = Rng(mix_seed(self.seed, e, 0x5EED)).permutation(self.count)
            out.append(self.perm[p % self.count])
        return out

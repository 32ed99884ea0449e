"""Property-based fuzzing of the untrusted-input parsers (Hypothesis): 0 crashes, 0 hangs.

Mutated GIF/WebP/APNG/MP4/WebM bytes (bit flips, truncation, byte insert/delete, chunk splicing and header
fields such as canvas size or frame count overwritten) go to ``data.media.decode_sticker``; random caption
rows (odd unicode, undecodable bytes, huge and mistyped fields, hostile paths) serialised as jsonl/csv/parquet
and then byte-mutated go to ``data.drops.read_caption_table``. Property: a valid result or
``StickerRejected`` (decode) / rows + rejects with sane invariants (captions) — any other exception, a dead
worker (native crash) or an example over the per-example deadline fails the test.

CI budget: fixed and deterministic (``derandomize=True``, no example database): 5 x 80 decode and
3 x 60 caption-table examples, well under a minute on 2 cores. More: ``python -m benchmarks.fuzz``.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_harness import (
    INTERESTING,
    ODD_FILES,
    ODD_VALUES,
    STICKER_FORMATS,
    TABLE_FORMATS,
    Runner,
    caption_case,
    decode_case,
    mutate,
    serialize_table,
    sticker_seeds,
)

DECODE_EXAMPLES = 80  # per format
CAPTION_EXAMPLES = 60  # per table format
HANG_S = 15.0  # per-example deadline (a clean example takes milliseconds; generous for a loaded 2-core box)

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example])

_pos = st.integers(0, 1 << 16)
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("flip"), _pos, st.integers(0, 7)),
        st.tuples(st.just("truncate"), _pos),
        st.tuples(st.just("insert"), _pos, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), _pos, st.integers(1, 1024)),
        st.tuples(st.just("splice"), _pos, _pos, st.integers(1, 512)),
        st.tuples(st.just("dup"), _pos, st.integers(1, 1024)),
        st.tuples(st.just("field"), st.integers(0, 15), st.one_of(st.sampled_from(INTERESTING), st.integers(0, 1 << 32))),
    ),
    min_size=1, max_size=4,
)
_text = st.text(st.characters(codec=None, min_codepoint=0, max_codepoint=0x10FFFF), max_size=24)  # incl. surrogates
_value = st.one_of(st.sampled_from(ODD_VALUES), _text, st.integers(), st.none())
_row = st.fixed_dictionaries(
    {"id": st.one_of(st.sampled_from([f"id{i}" for i in range(4)]), _value),
     "file": st.one_of(st.sampled_from(ODD_FILES), _text),
     "caption": _value},
    optional={"extra": _value},
)
_byte_ops = st.lists(
    st.one_of(st.tuples(st.just("flip"), _pos, st.integers(0, 7)), st.tuples(st.just("truncate"), _pos),
              st.tuples(st.just("insert"), _pos, st.sampled_from([b"\xff", b"\x00", b'"', b"\n", b",", b"\n" + b"[" * 3000 + b"\n",
                                                                     b"\n" + b"1" * 5000 + b"\n", b"\xed\xa0\x80", b"{}"]))),
    max_size=3,
)


@pytest.fixture(scope="module")
def runner():
    with Runner(hang_s=HANG_S, quiet=True) as r:
        yield r


@pytest.fixture(scope="module")
def seeds(runner):
    return sticker_seeds()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", STICKER_FORMATS)
def test_fuzz_decode_sticker_never_crashes_or_hangs(runner, seeds, fmt):
    seed = seeds[fmt]
    assert runner.run(decode_case, seed).kind == "ok", "the unmutated seed must decode"

    @settings(FUZZ, max_examples=DECODE_EXAMPLES)
    @given(ops=_ops)
    def check(ops):
        out = runner.run(decode_case, mutate(seed, ops, fmt))
        assert out.kind in ("ok", "rejected"), f"{out.kind}: {out.detail}"

    check()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("fmt", TABLE_FORMATS)
def test_fuzz_caption_tables_never_crash_or_hang(runner, fmt):
    @settings(FUZZ, max_examples=CAPTION_EXAMPLES)
    @given(rows=st.lists(_row, max_size=8), byte_ops=_byte_ops)
    def check(rows, byte_ops):
        table = mutate(serialize_table(rows, fmt), byte_ops, fmt)
        out = runner.run(caption_case, table, fmt)
        assert out.kind == "ok", f"{out.kind}: {out.detail}"

    check()


# ------------------------------------------------------------------ what the fuzzer found (kept as fixed cases)

FOUND = [  # (format, mutation, what it did before the fix)
    ("mp4", [("field", 2, 3845626003), ("flip", 6683, 6)], "stco chunk offset past EOF: decord segfault"),
    ("mp4", [("flip", 17899, 2)], "stsz sample size past EOF: decord segfault"),
    ("webm", [("flip", 18393, 1), ("flip", 2796, 1), ("field", 4, 4294967295)], "Duration 1.3e12 ms: decord bad_alloc"),
    ("mp4", [("flip", 57963, 2), ("flip", 50356, 1), ("splice", 21946, 45306, 4)], "fps > 1000: 0 ms durations"),
]


@pytest.mark.parametrize("fmt,ops,was", FOUND, ids=[w.split(":")[0] for *_, w in FOUND])
def test_fuzz_found_decoder_crashes_stay_fixed(runner, seeds, fmt, ops, was):
    out = runner.run(decode_case, mutate(seeds[fmt], ops, fmt))
    assert out.kind in ("ok", "rejected"), f"{was}: {out.kind}: {out.detail}"


def test_fuzz_found_caption_rows_stay_fixed(tmp_path):
    from data.drops import CaptionStatus, read_caption_table
    from data.ingest import IngestSettings, ingest_drop

    drop = tmp_path / "d"
    drop.mkdir()
    (drop / "captions.jsonl").write_bytes(b"\n".join([
        b'{"id": "a", "file": "\xff.gif", "caption": "raw byte in the path"}',  # crashed the manifest write
        b'{"id": "b", "file": "b.gif", "caption": "\\ud800"}',  # a lone surrogate escape: kept, caption dropped
        b"[" * 3000,  # RecursionError: made the whole table unreadable
        b"1" * 5000,  # int too long for str(): ValueError, same
        b'{"id": "c", "file": "c.gif", "caption": "fine"}',
    ]))
    rows, rejects = read_caption_table(str(drop))
    assert [(r.id, r.caption_status) for r in rows] == [("b", CaptionStatus.INVALID_UTF8), ("c", CaptionStatus.OK)]
    assert sorted(j.row for j in rejects) == [1, 3, 4]
    report = ingest_drop(str(drop), tmp_path / "out" / "d", IngestSettings(size=16, workers=1), progress=False)
    assert report.n_rejected == 5  # 3 bad rows + 2 missing files; the quarantine table was written

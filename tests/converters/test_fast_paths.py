"""The shortcuts the readers and writers take for speed give exactly what the long way gives.

* the opcode scan steps over length-prefixed arguments in its short loop only when neither the
  stack model nor the budget watch runs: both ways must find the same end, charge the same
  budget and refuse a cut-short argument with the same words;
* the quick opcode loop, taken for small pickles of the opcodes torch writes, gives the same
  end, escaped flag and charge as the long one, or the same refusal in the same words;
* a ``data.pkl`` laid out opcode for opcode as torch saves a diffusers or an A1111 embedding is
  matched whole by a regular expression instead of being scanned and run: the same objects, the
  same budget charged, the same refusals, on real files, on files torch writes in every variant
  of those layouts, and on their near misses;
* a file stem is cleaned by one regular expression instead of a test of each character;
* a safetensors header held in memory is sliced, not streamed, with the same verdicts, and its
  entries are checked by plain loops that judge as the isinstance spelling did;
* the safetensors writer looks dtypes up by the dtype itself and joins the tensors' bytes once;
* the norm ``inspect`` shows (:meth:`Embedding.norms`) squares while widening to float64 (one
  ufunc, not a copy then a square) and takes the root with ``math.sqrt``: the same float as the
  copy, square, sum and ``np.sqrt``; and its finiteness, judged from the norms, is what the
  readers' own check finds.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import struct
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from tireg.converters import pickle_safe, read_file, safetensors_file, torch_file
from tireg.converters.embedding import Embedding
from tireg.converters.errors import EmbeddingFileError
from tireg.converters.writing import _NOT_STEM


def _pickles(corpus: Path) -> list[bytes]:
    """The object pickles of the corpus' torch files, and of files torch_file writes."""
    found = []
    for path in sorted(corpus.iterdir()):
        if path.suffix in (".pt", ".bin"):
            with zipfile.ZipFile(path) as archive:
                (name,) = [n for n in archive.namelist() if n.endswith("data.pkl")]
                found.append(archive.read(name))
    written = torch_file.dumps(
        {"string_to_param": {"*": np.ones((2, 768), np.float32)}, "name": "x" * 300, "step": 7}
    )
    with zipfile.ZipFile(io.BytesIO(written)) as archive:
        found.append(archive.read("archive/data.pkl"))
    return found


def _scan(data: bytes, fast: bool) -> tuple[int, bool, int]:
    """(end, escaped, bytes charged) of a scan; ``fast=False`` leaves the budget just short of
    the worst case, which turns the watch (and with it the long way) on."""
    worst = (pickle_safe._OPCODE_COST + pickle_safe._CHAR_COST) * len(data)
    budget = pickle_safe.Budget(10**12 if fast else worst - 1)
    end, escaped = pickle_safe.scan(data, 0, budget)
    return end, escaped, budget.limit - budget.left


def test_short_and_long_scan_agree_on_real_pickles(corpus: Path) -> None:
    pickles = _pickles(corpus)
    # protocol 4's 1-byte and 8-byte prefixed strings and bytes too
    pickles.append(pickle.dumps({"a" * 200: b"\0" * 300, "b": bytearray(3), "c": 2**70}, 5))
    for data in pickles:
        assert _scan(data, fast=True) == _scan(data, fast=False)


@pytest.mark.parametrize("cut", [1, 3, 5, 20])
def test_a_cut_short_argument_is_refused_alike(cut: int) -> None:
    data = pickle.dumps(["x" * 40], 2)
    data = data[: data.index(b"X") + cut]  # inside BINUNICODE's length or text
    messages = set()
    for fast in (True, False):
        with pytest.raises(EmbeddingFileError) as caught:
            _scan(data, fast)
        messages.add(caught.value.message)
    assert len(messages) == 1 and "corrupt pickle" in messages.pop()


def test_stem_characters_are_those_of_str_isalnum() -> None:
    every = "".join(map(chr, range(sys.maxunicode + 1)))
    by_character = "".join(ch if ch.isalnum() or ch in "._- " else "_" for ch in every)
    assert _NOT_STEM.sub("_", every) == by_character


@pytest.mark.parametrize("dtype", ["<f4", ">f4", "<f2", ">f8", "<i8", ">i2", "u1", "?"])
def test_safetensors_bytes_do_not_depend_on_byte_order_or_memory_layout(dtype: str) -> None:
    rng = np.random.default_rng(0)
    canonical = (rng.standard_normal((3, 5)) * 9).astype(np.dtype(dtype).newbyteorder("<"))
    expected = safetensors_file.dumps({"t": canonical, "e": canonical[:0]}, {"k": "v"})
    for variant in (canonical.astype(dtype), np.asfortranarray(canonical)):
        assert safetensors_file.dumps({"t": variant, "e": variant[:0]}, {"k": "v"}) == expected
    tensors, metadata = safetensors_file.loads(expected)
    assert metadata == {"k": "v"} and tensors["t"].tobytes() == canonical.tobytes()


def test_the_norm_is_the_widened_copy_squared_and_summed(corpus: Path) -> None:
    matrices = []
    for path in sorted(corpus.iterdir()):
        try:
            matrices.extend(read_file(path).vectors.values())
        except EmbeddingFileError:
            continue  # the corpus' broken files
    assert len(matrices) >= 4
    rng = np.random.default_rng(9)
    for n, width in [(1, 768), (2, 1024), (8, 1280), (16, 768), (75, 320)]:
        scale = rng.uniform(1e-3, 1e3)
        matrices.append((rng.standard_normal((n, width)) * scale).astype(np.float32))
        matrices.append(matrices[-1].astype(np.float16).astype(np.float32))
    for matrix in matrices:
        wide = matrix.astype(np.float64)
        slow = float(np.sqrt(np.add.reduce(np.square(wide, out=wide), axis=None)))
        (norm,) = Embedding("e", {"emb": matrix}).norms().values()
        assert norm == slow


def _scan_outcome(data: bytes, quick: bool, monkeypatch: pytest.MonkeyPatch) -> object:
    """(end, escaped, bytes charged) of a scan, or the refusal's type and words."""
    with monkeypatch.context() as patch:
        if not quick:
            patch.setattr(pickle_safe, "_quick_opcodes", lambda data, start: None)
        budget = pickle_safe.Budget(10**12)
        try:
            end, escaped = pickle_safe.scan(data, 0, budget)
        except EmbeddingFileError as exc:
            return type(exc).__name__, exc.message
        return end, escaped, budget.limit - budget.left


def _mutants(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    """``data`` cut short, with bytes changed, inserted and dropped: near misses of a pickle."""
    out = [data[:cut] for cut in range(0, len(data), max(1, len(data) // 16))]
    for _ in range(count):
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            at = int(rng.integers(0, len(raw)))
            choice = rng.integers(0, 3)
            if choice == 0:
                raw[at] = int(rng.integers(0, 256))
            elif choice == 1:
                raw.insert(at, int(rng.integers(0, 256)))
            else:
                del raw[at]
        out.append(bytes(raw))
    return out


def test_quick_and_long_opcode_loops_agree(corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pickles = _pickles(corpus)
    values: list[object] = [
        {"a" * 300: b"\0" * 300, "b": bytearray(3), "c": 2**70, "d": 1.5, "e": [None, True]},
        ((((((1,),),),),),),
        [(i,) for i in range(150)],  # more tuple builders than MAX_TUPLE_DEPTH
        {"x": list(range(400))},  # LONG_BINPUT beyond 256 memo entries
    ]
    for value in values:
        pickles += [pickle.dumps(value, protocol) for protocol in range(6)]
    pickles.append(b"\x80\x02cos\nsystem\nq\x00.")  # refused by the allow-list
    pickles.append(b"\x80\x02ctorch\nFloatStorage\n\x82\x01.")  # EXT1 after a global
    rng = np.random.default_rng(5)
    quick_taken = 0
    for data in pickles:
        for variant in [data, *_mutants(data, rng, 60)]:
            outcome = _scan_outcome(variant, True, monkeypatch)
            assert outcome == _scan_outcome(variant, False, monkeypatch), variant
            with contextlib.suppress(EmbeddingFileError):
                quick_taken += pickle_safe._quick_opcodes(variant, 0) is not None
    assert quick_taken > 60  # the quick loop did run, and not only on the unmutated pickles


def test_inspect_finiteness_is_the_readers(tmp_path: Path) -> None:
    from tireg.converters import describe, read_file_detailed, safetensors_file

    rng = np.random.default_rng(3)
    for case, poison in enumerate([None, np.nan, np.inf, -np.inf, np.float32(3e38)]):
        matrix = rng.standard_normal((4, 768)).astype(np.float32)
        if poison is not None:
            matrix[1, 5] = poison
            matrix[3, 0] = poison
        path = tmp_path / f"e{case}.safetensors"
        path.write_bytes(safetensors_file.dumps({"emb_params": matrix}))
        expected = read_file_detailed(path, warn=False).nonfinite
        warnings = describe(path)["warnings"]
        assert len(warnings) == (1 if expected else 0)
        assert expected == (2 if poison is not None and not np.isfinite(poison) else 0)
        if expected:
            assert f" {expected} vector(s) hold NaN or Inf" in warnings[0]


def _old_entry_verdict(shape: object, offsets: object) -> str | None:
    """Which check the isinstance spelling of the entry checks failed first (None: passed)."""
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        return "invalid shape"
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) and o >= 0 for o in offsets)
        or offsets[0] > offsets[1]
    ):
        return "invalid data_offsets"
    return None


def _header_outcome(data: bytes, streamed: bool) -> object:
    """The header read from bytes or through a stream, or the refusal's words."""
    try:
        if streamed:
            return safetensors_file.read_header(io.BytesIO(data), len(data))
        return safetensors_file.header_of(data)
    except EmbeddingFileError as exc:
        return exc.message


def test_safetensors_header_of_bytes_is_the_streamed_header() -> None:
    values: list[object] = [[2, 3], [], [0], [True, 3], [2.0, 3], [-1, 3], ["2"], [[2]], None, {}]
    offsets: list[object] = [[0, 24], [0, 0], [1, 0], [-1, 24], [0.0, 24], [0, True], [0], None]
    files = [
        safetensors_file.dumps({"a": np.ones((2, 3), np.float32)}, {"k": "v"}),
        safetensors_file.dumps({"b": np.ones((1, 768), np.float16), "c": np.zeros(0, np.int8)}),
    ]
    for shape in values:
        for offset in offsets:
            head = json.dumps({"t": {"dtype": "F32", "shape": shape, "data_offsets": offset}})
            files.append(struct.pack("<Q", len(head)) + head.encode() + b"\0" * 24)
    files.append(b"\x05\0\0\0\0\0\0\0{}")  # a header running past the end
    for data in files:
        assert _header_outcome(data, streamed=False) == _header_outcome(data, streamed=True)
    for shape in values:  # the entry checks' verdicts are the isinstance spelling's
        for offset in offsets:
            head = json.dumps({"t": {"dtype": "U8", "shape": shape, "data_offsets": offset}})
            data = struct.pack("<Q", len(head)) + head.encode()
            try:
                safetensors_file.header_of(data + b"\0" * 64)
                verdict = None
            except EmbeddingFileError as exc:
                verdict = exc.message
            expected = _old_entry_verdict(shape, offset)
            if expected is not None:
                assert verdict is not None and expected in verdict
            else:
                assert verdict is None or "invalid" not in verdict


def _unpickled(data: bytes, layouts: bool) -> object:
    """(object, bytes charged) of a ``data.pkl`` read as :mod:`tireg.converters.torch_file`
    reads it (:func:`pickle_safe.unpickle_layout`, else :func:`pickle_safe.unpickle`), or the
    refusal's type and words; ``layouts=False`` takes the long way whatever the pickle."""
    budget = pickle_safe.Budget(10**12)
    try:
        known = pickle_safe.unpickle_layout(data, budget) if layouts else None
        if known is not None:
            obj, holder, key = known
            assert type(holder[key]) is pickle_safe.TensorStub
        else:
            obj, _ = pickle_safe.unpickle(data, budget=budget)
    except EmbeddingFileError as exc:
        return type(exc).__name__, exc.message
    return obj, budget.limit - budget.left


def _saved_pickles() -> list[bytes]:
    """``data.pkl`` of what torch saves in every variant of the two layouts: 1-D and 2-D
    tensors, each storage type, requires_grad either way, BININT1/2 and signed BININT ints,
    names that are not ASCII or hold bytes the regular expression spells, checkpoints or not."""
    torch = pytest.importorskip("torch")
    found = []
    tensors = [
        torch.ones(768),
        torch.zeros(3, 1024),
        torch.randn(75, 768).half(),
        torch.randn(2, 1280).bfloat16(),
        torch.randn(70000, 1).double(),
        torch.nn.Parameter(torch.ones(1, 768)).detach().requires_grad_(),
    ]
    names = ["<birb-style>", "é名前", "q\x13X\x04\x00\x00\x00stepq", "*x", "a" * 300]
    for i, tensor in enumerate(tensors):
        name = names[i % len(names)]
        objs: list[object] = [
            {name: tensor},
            {
                "string_to_token": {"*": 265 + 70000 * i},
                "string_to_param": {"*": tensor},
                "name": name,
                "step": [0, 1000, 70000, -1, 2**31 - 1, 5][i],
                "sd_checkpoint": [None, "e6e8e1fc"][i % 2],
                "sd_checkpoint_name": [None, "model", "v1-5"][i % 3],
            },
        ]
        if i == 0:  # a str met twice is pickled once, then fetched: not the layout
            objs.append({**objs[1], "sd_checkpoint_name": name})  # type: ignore[dict-item]
        for obj in objs:
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            with zipfile.ZipFile(buffer) as archive:
                found.append(archive.read("archive/data.pkl"))
    return found


def test_torch_s_embedding_layouts_are_read_as_the_unpickler_reads_them(corpus: Path) -> None:
    pickles = _saved_pickles() + _pickles(corpus)
    matched = 0
    for data in pickles:
        fast = _unpickled(data, True)
        assert fast == _unpickled(data, False)
        budget = pickle_safe.Budget(10**12)
        matched += pickle_safe.unpickle_layout(data, budget) is not None
    # every file torch saved and the corpus' three, but for the one that names its str twice
    # and tireg's own (whose dict has other keys)
    assert matched == len(pickles) - 2


def test_a_near_miss_of_a_layout_is_read_as_the_unpickler_reads_it(corpus: Path) -> None:
    """Bytes changed, inserted, dropped or cut: whatever the regular expression still matches
    (a tensor with other sizes, a refusal by a stand-in's checks) is what the long way makes of
    it, and anything else it leaves to the long way."""
    rng = np.random.default_rng(11)
    matched = 0
    layouts = [
        data
        for data in _saved_pickles() + _pickles(corpus)
        if pickle_safe.unpickle_layout(data, pickle_safe.Budget(10**12)) is not None
    ]
    for data in layouts[:5] + layouts[-3:]:  # both layouts, and the corpus' files
        for variant in _mutants(data, rng, 150) + _retouched(data, rng, 150):
            fast = _unpickled(variant, True)
            assert fast == _unpickled(variant, False), variant
            with contextlib.suppress(EmbeddingFileError):
                matched += (
                    pickle_safe.unpickle_layout(variant, pickle_safe.Budget(10**12)) is not None
                )
    assert matched > 50  # the near misses did reach the fast path, not only the long way


def _plain(value: object) -> object:
    """A decoded torch file with its arrays as (dtype, shape, bytes), comparable with ``==``."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return (value.dtype.str, value.shape, value.tobytes(), value.flags.writeable)
    return value


def test_a_layout_s_file_decodes_as_the_long_way_decodes_it(
    corpus: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """:func:`torch_file.load` converts only the one tensor of a layout's object: the whole
    file decodes to what converting every value the long way gives, in both tensor modes."""
    torch = pytest.importorskip("torch")
    archives = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.suffix in (".pt", ".bin")]
    for tensor in (torch.ones(768), torch.randn(3, 1024).half(), torch.randn(2, 1280).bfloat16()):
        for obj in ({"<t>": tensor}, {"string_to_token": {"*": 265}, "string_to_param":
                    {"*": tensor}, "name": "n", "step": 9, "sd_checkpoint": None,
                    "sd_checkpoint_name": "m"}):  # fmt: skip
            buffer = io.BytesIO()
            torch.save(obj, buffer)
            archives.append(buffer.getvalue())
    for data in archives:
        for mode in ("load", "shape"):
            fast = _plain(torch_file.load(data, tensors=mode))  # type: ignore[arg-type]
            with monkeypatch.context() as patch:
                patch.setattr(pickle_safe, "unpickle_layout", lambda data, budget: None)
                assert fast == _plain(torch_file.load(data, tensors=mode))  # type: ignore[arg-type]


def _retouched(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    """``data`` with the bytes of one or two of a layout's fields (an int's or a str's, a
    memo index, an opcode chosen among several) replaced by others of the same length: still
    the layout, mostly, with sizes, offsets, names and memo slots a file could lie about."""
    match = (pickle_safe._A1111 if data[5:6] == b"(" else pickle_safe._DIFFUSERS).fullmatch(data)
    assert match is not None
    spans = [match.span(g) for g in range(1, len(match.groups()) + 1) if match.start(g) >= 0]
    out = []
    for _ in range(count):
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 3))):
            start, end = spans[int(rng.integers(0, len(spans)))]
            for at in range(start, end):
                if rng.random() < 0.5:
                    raw[at] = int(rng.integers(0, 256))
        out.append(bytes(raw))
    return out


def test_a_layout_whose_binget_was_rebound_is_left_to_the_unpickler(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The A1111 layout's second ``"*"`` is a ``BINGET`` of the first; a pickle that re-binds
    that memo slot in between builds another key, which only the unpickler knows."""
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    obj = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": torch.ones(2, 768)},
        "name": "x",
        "step": 1,
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
    }
    torch.save(obj, buffer)
    with zipfile.ZipFile(buffer) as archive:
        data = archive.read("archive/data.pkl")
    rebound = data.replace(b"string_to_paramq\x04", b"string_to_paramq\x03", 1)
    assert rebound != data
    assert pickle_safe.unpickle_layout(rebound, pickle_safe.Budget(10**12)) is None
    obj_read, _ = _unpickled(rebound, True)  # type: ignore[misc]
    assert list(obj_read["string_to_param"]) == ["string_to_param"]


def test_a_layout_naming_a_storage_not_allowed_is_refused_in_the_unpickler_s_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (data,) = [p for p in _saved_pickles()[:1]]
    evil = data.replace(b"ctorch\nFloatStorage\n", b"ctorch\nEvilStorage\n", 1)
    assert pickle_safe.unpickle_layout(evil, pickle_safe.Budget(10**12)) is None
    refusal = _unpickled(evil, True)
    assert refusal == ("UnsafePickleError", _unpickled(evil, False)[1])  # type: ignore[index]
    assert "torch.EvilStorage" in str(refusal)


def _torch_archives(corpus: Path) -> list[bytes]:
    """Zip archives as torch writes them (the corpus' files, and one with many members) and as
    tireg writes them."""
    archives = [p.read_bytes() for p in sorted(corpus.iterdir()) if p.suffix in (".pt", ".bin")]
    archives.append(torch_file.dumps({f"t{i}": np.ones((1, 8), np.float32) for i in range(12)}))
    torch = pytest.importorskip("torch")
    buffer = io.BytesIO()
    torch.save({"<x>": torch.ones(2, 768), "step": 3}, buffer)  # torch >= 2.1: seven members
    archives.append(buffer.getvalue())
    return archives


def _central_mutants(data: bytes, rng: np.random.Generator, count: int) -> list[bytes]:
    """``data`` with bytes of its central directory and end records changed, one to three."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        start = archive.start_dir  # where the central directory begins
    out = []
    for _ in range(count):
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(start, len(raw)))] = int(rng.integers(0, 256))
        out.append(bytes(raw))
    return out


def test_the_central_directory_read_straight_is_the_one_zipfile_reads(corpus: Path) -> None:
    """Whatever :func:`torch_file._directory` reads from an archive in memory (and not left to
    :mod:`zipfile`) is, member for member, what zipfile reads: names, flags, method, sizes and
    offsets; on real archives and on their directories' mutants."""
    rng = np.random.default_rng(13)
    straight = 0
    for data in _torch_archives(corpus):
        assert torch_file._directory(data) is not None
        for variant in [data, *_central_mutants(data, rng, 300)]:
            try:
                ours = torch_file._directory(variant)
            except UnicodeDecodeError:  # a name that is not UTF-8: zipfile cannot read it either
                with pytest.raises(UnicodeDecodeError):
                    zipfile.ZipFile(io.BytesIO(variant))
                continue
            if ours is None:
                continue
            straight += 1
            with zipfile.ZipFile(io.BytesIO(variant)) as archive:
                infos = archive.infolist()
            theirs = {
                info.orig_filename: (
                    info.flag_bits,
                    info.compress_type,
                    info.compress_size,
                    info.file_size,
                    info.header_offset,
                )
                for info in infos
            }
            assert len(theirs) == len(infos) == len(ours)
            assert {
                name: (m.flag_bits, m.compress_type, m.compress_size, m.file_size, m.header_offset)
                for name, m in ours.items()
            } == theirs
    assert straight > 300  # mutants (a CRC, a date, a size) read straight, not only the originals

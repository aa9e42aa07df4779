"""Generator of malicious pickles and torch files, for the safety tests.

Every payload, were it executed, would create ``sentinel`` (or call something that runs code).
Tests assert each one is refused with the offending global named, and that ``sentinel`` still
does not exist. Payloads are opcode streams written by hand (plus a few made by ``pickle.dumps``
of ``__reduce__`` objects, the way real attacks are made), so the same payload can be wrapped in
every container: a raw pickle, a torch zip beside real tensors, a legacy torch file.

A payload *body* pushes exactly one value; :func:`wrap` adds ``PROTO``/``STOP``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import pickletools
import shlex
import struct
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: the copyreg extension code the EXT tests register for ('os', 'system')
EXT_CODE = 0xF0


@dataclass(frozen=True)
class Payload:
    id: str
    body: bytes  # opcodes that push the malicious value
    refused: str  # the global the error must name ('module.name', as spelled in the pickle)


# ------------------------------------------------------------------------------ opcode helpers


def s(text: str) -> bytes:
    """BINUNICODE."""
    raw = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(raw)) + raw


def g(module: str, name: str) -> bytes:
    """GLOBAL."""
    return b"c" + f"{module}\n{name}\n".encode()


def sg(module: str, name: str) -> bytes:
    """STACK_GLOBAL from two SHORT_BINUNICODE strings (protocol 4)."""
    m, n = module.encode(), name.encode()
    return b"\x8c" + bytes([len(m)]) + m + b"\x8c" + bytes([len(n)]) + n + b"\x93"


def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` with MARK … TUPLE REDUCE."""
    return func + b"(" + b"".join(args) + b"tR"


def str_list(*items: str) -> bytes:
    return b"](" + b"".join(s(i) for i in items) + b"e"


def wrap(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


class _Reduce:
    """An object whose pickling *is* the attack: ``__reduce__`` names a callable and its args."""

    def __init__(self, func: object, *args: object) -> None:
        self.func, self.args = func, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.func, self.args


def _reduce_body(func: object, *args: object, protocol: int) -> bytes:
    data = pickle.dumps(_Reduce(func, *args), protocol=protocol)
    start = 2 if data[:1] == b"\x80" else 0
    if protocol >= 4:  # drop the FRAME header too
        start += 9
    return data[start:-1]


# ------------------------------------------------------------------------------------ payloads


def payloads(sentinel: str) -> list[Payload]:
    """Every malicious payload, aimed at ``sentinel``."""
    sh = f"touch {shlex.quote(sentinel)}"
    py = f"open({sentinel!r}, 'w').close()"
    out: list[Payload] = []

    def add(id_: str, body: bytes, refused: str) -> None:
        out.append(Payload(id_, body, refused))

    # --- direct calls of the classics
    add("os.system", call(g("os", "system"), s(sh)), "os.system")
    add("posix.system", call(g("posix", "system"), s(sh)), "posix.system")
    add("os.popen", call(g("os", "popen"), s(sh)), "os.popen")
    add("os.execv", call(g("os", "execv"), s("/bin/sh"), str_list("sh", "-c", sh)), "os.execv")
    add("builtins.exec", call(g("builtins", "exec"), s(py)), "builtins.exec")
    add("builtins.eval", call(g("builtins", "eval"), s(py)), "builtins.eval")
    add("__builtin__.eval", call(g("__builtin__", "eval"), s(py)), "__builtin__.eval")
    add("builtins.compile", call(g("builtins", "compile"), s(py), s("x"), s("exec")),
        "builtins.compile")  # fmt: skip
    add("builtins.open", call(g("builtins", "open"), s(sentinel), s("w")), "builtins.open")
    add("builtins.__import__", call(g("builtins", "__import__"), s("os")), "builtins.__import__")
    getattr_chain = call(
        call(g("builtins", "getattr"), call(g("builtins", "__import__"), s("os")), s("system")),
        s(sh),
    )
    add("getattr-chain", getattr_chain, "builtins.getattr")
    add("subprocess.Popen", call(g("subprocess", "Popen"), str_list("touch", sentinel)),
        "subprocess.Popen")  # fmt: skip
    touch = str_list("touch", sentinel)
    add("subprocess.check_output", call(g("subprocess", "check_output"), touch),
        "subprocess.check_output")  # fmt: skip
    add("subprocess.run", call(g("subprocess", "run"), str_list("touch", sentinel)),
        "subprocess.run")  # fmt: skip
    add("subprocess.getoutput", call(g("subprocess", "getoutput"), s(sh)), "subprocess.getoutput")

    # --- made the way real attacks are made: pickle.dumps of a __reduce__ object
    for protocol in (0, 2, 4, 5):
        add(f"reduce-os.system-p{protocol}", _reduce_body(os.system, sh, protocol=protocol),
            "posix.system")  # fmt: skip
    add("reduce-exec-p2", _reduce_body(exec, py, protocol=2), "__builtin__.exec")  # fix_imports

    # --- STACK_GLOBAL and memo tricks
    add("stack_global", call(sg("os", "system"), s(sh)), "os.system")
    memo_names = s("os") + b"q\x00" + s("system") + b"q\x01" + b"00"  # BINPUT then POP both
    add("stack_global-from-memo", memo_names + call(b"h\x00h\x01\x93", s(sh)), "os.system")
    long_memo = s("builtins") + b"r\x00\x01\x00\x00" + b"0" + s("exec") + b"r\x01\x01\x00\x000"
    long_get = b"j\x00\x01\x00\x00j\x01\x01\x00\x00\x93"
    add("stack_global-long_binget", long_memo + call(long_get, s(py)), "builtins.exec")
    # a harmless allowed global first, so a scanner that only looks at the first one is fooled
    allowed_first = call(g("collections", "OrderedDict")) + b"0"
    add("allowed-global-then-evil", allowed_first + call(sg("builtins", "eval"), s(py)),
        "builtins.eval")  # fmt: skip
    # the evil global pushed, memoised and popped at once; called later through BINGET
    add("global-via-memo", g("os", "system") + b"q\x070" + s("x") + b"0" + call(b"h\x07", s(sh)),
        "os.system")  # fmt: skip
    # names shared through the memo with an allowed name: 'torch' + a storage-looking attribute
    reuse = s("torch") + b"q\x00" + sg("torch", "FloatStorage") + b"0"
    reuse += call(b"h\x00" + s("load") + b"\x93", s(sentinel))
    add("stack_global-memo-module-reuse", reuse, "torch.load")
    add("INST", b"(" + s(sh) + b"ios\nsystem\n", "os.system")
    add("OBJ", b"(" + g("os", "system") + s(sh) + b"o", "os.system")
    add("NEWOBJ", g("subprocess", "Popen") + b"(" + str_list("touch", sentinel) + b"t\x81",
        "subprocess.Popen")  # fmt: skip

    # --- a nested pickle: the inner stream (itself malicious) handed to a loader
    inner = wrap(call(g("os", "system"), s(sh))).decode("latin-1")
    as_bytes = call(g("_codecs", "encode"), s(inner), s("latin1"))
    add("nested-pickle.loads", call(g("pickle", "loads"), as_bytes), "pickle.loads")
    add("nested-_pickle.loads", call(g("_pickle", "loads"), as_bytes), "_pickle.loads")
    add("nested-torch.load", call(g("torch", "load"), s(sentinel)), "torch.load")
    add("nested-torch.serialization.load", call(g("torch.serialization", "load"), s(sentinel)),
        "torch.serialization.load")  # fmt: skip
    add("nested-numpy.load", call(g("numpy", "load"), s(sentinel)), "numpy.load")

    # --- module families of published scanner bypasses (perf-security.md §5.2)
    families = [
        ("pip", "main", str_list("install", sentinel)),
        ("pip._internal.cli.main", "main", str_list("install", sentinel)),
        ("timeit", "timeit", s(py)),
        ("trace", "Trace", b""),
        ("idlelib.pyshell", "ModifiedInterpreter", b""),
        ("idlelib.calltip", "get_entity", s(py)),
        ("profile", "run", s(py)),
        ("cProfile", "run", s(py)),
        ("code", "InteractiveInterpreter", b""),
        ("pty", "spawn", str_list("touch", sentinel)),
        ("asyncio", "create_subprocess_shell", s(sh)),
        ("asyncio.unix_events", "_UnixSubprocessTransport", b""),
        ("asyncio.subprocess", "create_subprocess_exec", s("touch")),
        ("doctest", "debug_script", s(py)),
        ("numpy.testing._private.utils", "runstring", s(py)),
        ("numpy.f2py.crackfortran", "myeval", s(py)),
        ("_posixsubprocess", "fork_exec", b""),
        ("site", "addsitedir", s(sentinel)),
        ("atexit", "register", g("os", "system")),
        ("uuid", "_get_command_stdout", s("touch") + s(sentinel)),
        ("imaplib", "IMAP4_stream", s(sh)),
        ("runpy", "_run_code", s(py) + b"}"),
        ("importlib", "import_module", s("os")),
        ("ctypes", "CDLL", s("libc.so.6")),
        ("shutil", "copyfile", s("/dev/null") + s(sentinel)),
        ("webbrowser", "open", s("file://" + sentinel)),
        ("operator", "methodcaller", s("system") + s(sh)),
        ("functools", "partial", g("os", "system")),
        ("dill", "loads", s("")),
        ("joblib", "load", s(sentinel)),
    ]
    for module, name, args in families:
        add(f"family-{module}.{name}", call(g(module, name), args), f"{module}.{name}")

    # --- near the allow-list, but not on it
    lookalikes = [
        ("torch", "Tensor"),
        ("torch.nn", "Module"),
        ("torch.nn.modules.container", "Sequential"),
        ("torch._utils", "_rebuild_device_tensor_from_numpy"),
        ("torch._utils", "_rebuild_from_type_v2"),
        ("torch.jit", "load"),
        ("torch ", "FloatStorage"),
        ("torch", "FloatStorage "),
        ("tоrch", "FloatStorage"),  # Cyrillic 'о'
        ("torch", "_utils._rebuild_tensor_v2"),  # dotted attribute path (protocol 4 style)
        ("collections", "OrderedDict.fromkeys"),
        ("collections", "defaultdict"),
        ("copyreg", "__newobj__"),
        ("builtins", "frozenset"),
        ("builtins", "type"),
        ("numpy.core.multiarray", "frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy.core.multiarray", "_reconstruct.__globals__"),
        ("numpy.ma.core", "_mareconstruct"),
        ("numpy", "matrix"),
        ("numpy", "dtype.__setstate__"),
        ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint.__init__"),
    ]
    for module, name in lookalikes:
        add(f"lookalike-{module}.{name}", call(sg(module, name)), f"{module}.{name}")
    return out


def ext_payloads(sentinel: str) -> list[Payload]:
    """EXT opcodes; the test registers ``EXT_CODE`` as ('os', 'system') with copyreg first."""
    sh = s(f"touch {shlex.quote(sentinel)}")
    return [
        Payload("EXT1-registered", b"\x82" + bytes([EXT_CODE]) + b"(" + sh + b"tR", "os.system"),
        Payload("EXT2-unregistered", b"\x83\x34\x12(" + sh + b"tR", "copyreg extension code 4660"),
        Payload("EXT4-unregistered", b"\x84\x01\x00\x00\x01(" + sh + b"tR",
                "copyreg extension code 16777217"),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------- containers


def raw(body: bytes) -> bytes:
    return wrap(body)


def torch_zip(body: bytes, tensor_file: bytes) -> bytes:
    """A valid-looking torch zip: real tensor blobs from ``tensor_file``, a malicious data.pkl.

    The payload is spliced into the real pickle as one more dict item, after the real tensor.
    """
    src = zipfile.ZipFile(io.BytesIO(tensor_file))
    pkl = src.read("archive/data.pkl")
    assert pkl.endswith(b"s."), "expected a one-item dict"
    evil = pkl[:-1] + s("evil") + body + b"s."
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            dst.writestr(
                info.filename, evil if info.filename.endswith("data.pkl") else src.read(info)
            )
    return out.getvalue()


def legacy(body: bytes, legacy_file: bytes, position: int) -> bytes:
    """A legacy torch file whose pickle number ``position`` (0..4) is replaced by the payload."""
    parts: list[bytes] = []
    stream = io.BytesIO(legacy_file)
    for _ in range(5):  # genops only parses (to find the boundaries); it never executes
        start = stream.tell()
        for _op in pickletools.genops(stream):
            pass
        parts.append(legacy_file[start : stream.tell()])
    tail = legacy_file[stream.tell() :]
    parts[position] = wrap(body)
    return b"".join(parts) + tail


# ------------------------------------------------------------------- hostile files (issue 8)
#
# Files that run no code but crash, hang or blow up a careless reader: each is refused in one
# line, within seconds, under a 1 GiB address-space limit (tests/converters/test_hostile.py).
# ``kind`` says which class of the issue the file belongs to.


@dataclass(frozen=True)
class Hostile:
    id: str
    kind: str  # "traceback", "validation", "hang" or "blow-up"
    command: str  # "inspect", "add", "convert-png" or "model-add"
    make: Callable[[Path], Path]  # writes the file (or folder) under the given folder
    says: str  # a fragment the one-line refusal must contain


def _st(header: dict[str, object] | str, body: bytes = b"") -> bytes:
    """Raw safetensors bytes: any header (a dict, or JSON text as is) and buffer."""
    text = header if isinstance(header, str) else json.dumps(header)
    return struct.pack("<Q", len(text)) + text.encode() + body


def _tireg(tensor: dict[str, object], body: bytes, meta: dict[str, str] | None = None) -> bytes:
    metadata = {"tireg.schema": "1", "tireg.name": "x", **(meta or {})}
    return _st({"__metadata__": metadata, **tensor}, body)


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, blob in members.items():
            archive.writestr(name, blob)
    return out.getvalue()


def _torch_zip(pkl: bytes, **storages: bytes) -> bytes:
    """A torch zip archive around a hand-made ``data.pkl`` and raw storages."""
    blobs = {f"archive/data/{key}": blob for key, blob in storages.items()}
    return _zip({"archive/data.pkl": pkl, **blobs, "archive/version": b"3\n"})


def _a1111_pt(**fields: object) -> bytes:
    import numpy as np

    from tireg.converters import torch_file

    vec = np.ones((1, 768), dtype=np.float32)
    return torch_file.dumps(
        {"string_to_token": {"*": 265}, "string_to_param": {"*": vec}, "name": "x", **fields}
    )


def _long(value: int) -> bytes:
    """LONG1 (or LONG4 for huge values)."""
    raw = value.to_bytes(value.bit_length() // 8 + 1, "little", signed=True)
    if len(raw) < 256:
        return b"\x8a" + bytes([len(raw)]) + raw
    return b"\x8b" + struct.pack("<i", len(raw)) + raw


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def _deep_metadata(folder: Path, name: str = "deep.safetensors") -> Path:
    nested = "[" * 100_000 + "]" * 100_000
    header = '{"__metadata__": {"k": ' + nested + '}, "x": {"dtype": "F32", "shape": [1, 1], '
    header += '"data_offsets": [0, 4]}}'
    return _write(folder, name, _st(header, b"\0" * 4))


def _symlink_to_secret(folder: Path) -> Path:
    elsewhere = folder / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "key").write_bytes(b"\x01\x02SECRETKEY\xfe\xff" * 4)
    link = folder / "innocent.pt"
    link.symlink_to(elsewhere / "key")
    return link


def _fifo(folder: Path) -> Path:
    path = folder / "fifo.pt"
    os.mkfifo(path)
    return path


def _dev_zero(folder: Path) -> Path:
    path = folder / "zero.pt"
    path.symlink_to("/dev/zero")
    return path


def _progressive_jpeg(folder: Path) -> Path:
    """A 130 KB progressive JPEG, named .png, whose last scan repeats 6,000 times: libjpeg decodes
    each repetition over the whole 2048x2048 picture (two minutes)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (2048, 2048), 128).save(buf, "JPEG", progressive=True, quality=90)
    data = buf.getvalue()
    last_scan = data.rindex(b"\xff\xda")
    scan = data[last_scan:-2]  # up to the EOI marker
    return _write(folder, "card.png", data[:-2] + scan * 6000 + b"\xff\xd9")


def _colliding_keys(folder: Path) -> Path:
    """100,000 int keys that all hash to 0 (multiples of 2**61 - 1): a quadratic dict build."""
    prime = 2**61 - 1
    items = b"".join(_long(k * prime) + b"N" for k in range(1, 100_001))
    return _write(folder, "collide.pt", _torch_zip(b"\x80\x02}(" + items + b"u."))


def _codecs_memo(folder: Path) -> Path:
    """One memoised megabyte, encoded 1,000 times: a gigabyte from a 1 MB file."""
    encode = g("_codecs", "encode") + b"(h\x00" + s("latin1") + b"tR"
    pkl = b"\x80\x02" + s("x" * (1 << 20)) + b"q\x000](" + encode * 1000 + b"e."
    return _write(folder, "codecs.pt", _torch_zip(pkl))


def _ordered_dict_memo(folder: Path) -> Path:
    """A memoised list of 50,000 pairs, made into an OrderedDict 2,000 times (5 GB of dicts)."""
    pairs = b"".join(b"J" + struct.pack("<i", k) + b"N\x86" for k in range(50_000))
    again = g("collections", "OrderedDict") + b"(h\x01tR"
    pkl = b"\x80\x02](" + pairs + b"eq\x010](" + again * 2000 + b"e."
    return _write(folder, "dicts.pt", _torch_zip(pkl))


def _stride_zero(folder: Path, name: str = "stride0.pt") -> Path:
    """A 2-byte bfloat16 storage viewed with stride 0 as 8192 x 16384 (128 M elements)."""
    pid = b"(" + s("storage") + g("torch", "BFloat16Storage") + s("0") + s("cpu") + b"K\x01tQ"
    tensor = g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"K\x00"
    tensor += b"M\x00\x20M\x00\x40\x86K\x00K\x00\x86\x89" + g("collections", "OrderedDict")
    tensor += b")RtR"
    pkl = b"\x80\x02}" + s("emb_params") + tensor + b"s."
    return _write(folder, name, _torch_zip(pkl, **{"0": b"\0\0"}))


def _payload_bomb(folder: Path) -> Path:
    """A PNG card of a few dozen KB whose pixel payload inflates to 60 MB of JSON floats."""
    import numpy as np
    from PIL import Image

    from tireg.converters import a1111_png

    zeros = b"[" + b"0.0," * 15_000_000 + b"0.0]"
    payload = b'{"string_to_param": {"*": {"TORCHTENSOR": [' + zeros + b"]}}}"
    lo, hi = a1111_png._nibble_blocks(payload, 512, np.zeros(0, dtype=np.float32))
    gap = np.zeros((512, 1, 3), dtype=np.uint8)
    picture = np.full((512, 64, 3), 200, dtype=np.uint8)
    card = np.concatenate([lo, gap, picture, gap, hi], axis=1)
    path = folder / "bomb.png"
    Image.fromarray(card, "RGB").save(path, format="PNG")
    return path


def _card_of_strings(folder: Path) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    payload = {"string_to_param": {"*": {"TORCHTENSOR": [["0.5"] * 768]}}, "name": "s"}
    info = PngInfo()
    info.add_text("sd-ti-embedding", base64.b64encode(json.dumps(payload).encode()).decode())
    path = folder / "strings.png"
    Image.new("RGB", (64, 64), (9, 9, 9)).save(path, format="PNG", pnginfo=info)
    return path


def _zip_member_with_nul(folder: Path) -> Path:
    real = zipfile.ZipFile(io.BytesIO(_a1111_pt()))
    members = {
        info.filename.replace("data.pkl", "data.pklXjunk"): real.read(info)
        for info in real.infolist()
    }
    data = _zip(members).replace(b"data.pklXjunk", b"data.pkl\0junk")
    return _write(folder, "nul.pt", data)


def _maximal(folder: Path) -> Path:
    """The largest embedding tireg reads: 1,024 vectors of width 16,384, float16 (32 MB)."""
    body = b"\0" * (1024 * 16384 * 2)
    tensor: dict[str, object] = {
        "emb": {"dtype": "F16", "shape": [1024, 16384], "data_offsets": [0, len(body)]}
    }
    return _write(folder, "maximal.safetensors", _tireg(tensor, body))


def _amplifiers(folder: Path) -> Path:
    """A folder of small files that each decode to hundreds of MB (``add`` reads them on
    several threads at once)."""
    many = folder / "amplifiers"
    many.mkdir()
    for i in range(8):
        _stride_zero(many, f"stride0-{i}.pt")
    return many


def _f32(width: int, key: str = "clip_l", n: int = 1) -> tuple[dict[str, object], bytes]:
    body = b"\0" * (n * width * 4)
    return {key: {"dtype": "F32", "shape": [n, width], "data_offsets": [0, len(body)]}}, body


def hostile_files() -> list[Hostile]:
    """Every hostile file class, with the command that meets it and what its refusal says."""

    def st_file(name: str, header: dict[str, object], body: bytes) -> Callable[[Path], Path]:
        return lambda folder: _write(folder, name, _st(header, body))

    def tireg_file(
        name: str, tensor: tuple[dict[str, object], bytes], step: str | None = None
    ) -> Callable[[Path], Path]:
        meta = {} if step is None else {"tireg.step": step}
        return lambda folder: _write(folder, name, _tireg(*tensor, meta))

    def dims(shape: list[int]) -> dict[str, object]:
        return {"x": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}

    clip_l = _f32(768)
    return [
        # --- never a traceback
        Hostile("deep-metadata", "traceback", "inspect", _deep_metadata, "too deeply"),
        Hostile("deep-metadata-checkpoint", "traceback", "model-add", _deep_metadata,
                "too deeply"),
        Hostile("65-dimensions", "traceback", "inspect",
                st_file("dims.safetensors", dims([1] * 65), b""), "65 dimensions"),
        Hostile("zero-times-huge", "traceback", "inspect",
                st_file("zero.safetensors", dims([0, 2**70]), b""), "impossibly large"),
        Hostile("int-key-2**16000", "traceback", "inspect",
                lambda f: _write(f, "bigkey.pt", _torch_zip(b"\x80\x02}" + _long(2**16000)
                                                            + b"Ns.")), "16,001 bits"),
        Hostile("int-value-2**16000", "traceback", "inspect",
                lambda f: _write(f, "bigint.pt", _a1111_pt(step=2**16000)), "16,001 bits"),
        Hostile("step-2**80", "traceback", "add",
                lambda f: _write(f, "step.pt", _a1111_pt(step=2**80)), "step is out of range"),
        Hostile("step-100-digits", "traceback", "add",
                tireg_file("step.safetensors", clip_l, "9" * 100),
                "not a step number"),
        Hostile("name-300-characters", "traceback", "add",
                lambda f: _write(f, "long.pt", _a1111_pt(name="n" * 300)), "300 bytes long"),
        # --- one validation for every reader
        Hostile("tireg-float8", "validation", "inspect",
                tireg_file("f8.safetensors", ({"clip_l": {"dtype": "F8_E4M3", "shape": [1, 768],
                                               "data_offsets": [0, 768]}}, b"\0" * 768)),
                "not floats"),
        Hostile("tireg-int64", "validation", "inspect",
                tireg_file("i64.safetensors", ({"clip_l": {"dtype": "I64", "shape": [1, 768],
                                                "data_offsets": [0, 768 * 8]}}, b"\0" * 6144)),
                "not floats"),
        Hostile("tireg-wide-clip_l", "validation", "inspect",
                tireg_file("wide.safetensors", _f32(20_000)), "width 1..16384"),
        Hostile("tireg-clip_l-of-1024", "validation", "inspect",
                tireg_file("wrong.safetensors", _f32(1024)), "always 768 wide"),
        Hostile("tireg-arabic-indic-step", "validation", "inspect",
                tireg_file("arabic.safetensors", clip_l, "١٢٣"),
                "not a step number"),
        Hostile("card-tensor-of-strings", "validation", "inspect", _card_of_strings,
                "not numbers"),
        Hostile("zip-member-data.pkl-NUL-junk", "validation", "inspect", _zip_member_with_nul,
                "NUL"),
        Hostile("symlink-to-a-secret", "validation", "inspect", _symlink_to_secret,
                "unrecognised file format"),
        # --- never a hang
        Hostile("fifo", "hang", "inspect", _fifo, "not a regular file"),
        Hostile("symlink-to-dev-zero", "hang", "inspect", _dev_zero, "not a regular file"),
        Hostile("progressive-jpeg-named-png", "hang", "inspect", _progressive_jpeg,
                "JPEG picture"),
        Hostile("colliding-dict-keys", "hang", "inspect", _colliding_keys, "huge int as a"),
        Hostile("maximal-embedding-to-png", "hang", "convert-png", _maximal, "at most 75"),
        # --- never a blow-up
        Hostile("bf16-stride-0", "blow-up", "inspect", _stride_zero, "its tensors"),
        Hostile("codecs-encode-memo", "blow-up", "inspect", _codecs_memo, "_codecs.encode"),
        Hostile("OrderedDict-memo", "blow-up", "inspect", _ordered_dict_memo,
                "collections.OrderedDict"),
        Hostile("png-payload-bomb", "blow-up", "inspect", _payload_bomb, "decompresses to over"),
        Hostile("add-folder-of-amplifiers", "blow-up", "add", _amplifiers, "its tensors"),
    ]  # fmt: skip

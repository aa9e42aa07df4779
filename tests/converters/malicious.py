"""Generator of malicious pickles and torch files, for the safety tests.

Every payload, were it executed, would create ``sentinel`` (or call something that runs code).
Tests assert each one is refused with the offending global named, and that ``sentinel`` still
does not exist. Payloads are opcode streams written by hand (plus a few made by ``pickle.dumps``
of ``__reduce__`` objects, the way real attacks are made), so the same payload can be wrapped in
every container: a raw pickle, a torch zip beside real tensors, a legacy torch file.

A payload *body* pushes exactly one value; :func:`wrap` adds ``PROTO``/``STOP``.
"""

from __future__ import annotations

import io
import os
import pickle
import pickletools
import shlex
import struct
import zipfile
from dataclasses import dataclass

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

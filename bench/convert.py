"""Benchmark: inspect + convert-to-tireg through tireg's library vs. a plain torch/safetensors loop.

Generates 2,000 embedding files the way real tools write them (torch.save for diffusers .bin and
A1111 .pt, safetensors.torch.save_file for kohya/diffusers safetensors; a realistic mix of widths,
vector counts and fp16), then times, per file:

* tireg:     ``describe(path)`` (what ``tireg inspect`` prints: content sniffing, the allow-list
             unpickler, layout detection, hashes), then ``convert(paths, "tireg", out_dir=...)``
             (what ``tireg convert *.pt --out-dir D`` does: read, check, atomic write, no
             overwrite; each file fsynced before its rename, the folder fsynced once at the end);
             also ``convert([path])`` once per file (every call fully durable: file and folder);
* baseline:  ``torch.load(weights_only=True)`` or ``safetensors.torch.load_file`` (inspect),
             then load + ``safetensors.torch.save_file`` (convert): no layout detection, no
             hashing, no durability; also the same loop with each file fsynced and the folder
             fsynced once (what crash safety costs a plain script, still without atomic renames).

The headline ratios compare tireg with the plain baseline as-is (no fsync at all); the fsyncing
baseline is printed beside it so the cost of durability is visible on its own. Each case is timed
by the wall clock and by the process's CPU time: on a machine shared with other work the wall
clock mostly measures the scheduler, while CPU time is what the code itself costs (it leaves out
the waiting for fsync, which is why the wall clock stays the headline).

Run: .venv/bin/python bench/convert.py [--files N]
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save, save_file

from tireg.converters import convert, describe


def generate(folder: Path, count: int) -> list[Path]:
    """A realistic mix: 40% diffusers .bin, 35% A1111 .pt, 25% safetensors (kohya / diffusers)."""
    gen = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        width = 768 if i % 5 else 1024
        n = (1, 2, 4, 8, 16)[i % 5]
        vec = torch.randn(n, width, generator=gen)
        kind = i % 20
        if kind < 8:
            path = folder / f"concept-{i}.bin"
            torch.save({f"<concept-{i}>": vec}, path)
        elif kind < 15:
            path = folder / f"a1111-{i}.pt"
            torch.save(
                {
                    "string_to_token": {"*": 265},
                    "string_to_param": {"*": vec},
                    "name": f"a1111-{i}",
                    "step": 1000 + i,
                    "sd_checkpoint": "e6e8e1fc",
                    "sd_checkpoint_name": "model",
                },
                path,
            )
        elif kind < 18:
            path = folder / f"kohya-{i}.safetensors"
            save_file({"emb_params": vec.half()}, path, metadata={"modelspec.title": f"k{i}"})
        else:
            path = folder / f"diffusers-{i}.safetensors"
            save_file({f"<tok-{i}>": vec}, path, metadata={"format": "pt"})
        paths.append(path)
    return paths


def baseline_load(path: Path) -> dict[str, torch.Tensor]:
    """What a script without tireg does: load by extension, pick the tensors out."""
    if path.suffix == ".safetensors":
        return load_file(path)
    state = torch.load(path, weights_only=True)
    if "string_to_param" in state:
        return dict(state["string_to_param"])
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds of one call."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    best: dict[str, float] = {}
    best_cpu: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        src = root / "src"
        src.mkdir()
        paths = generate(src, args.files)
        os.sync()  # a folder at rest, as a user's is: its writeback is charged to no case
        size = sum(p.stat().st_size for p in paths)
        print(
            f"{len(paths)} files, {size / 1e6:.1f} MB "
            "(mix: .bin 40%, A1111 .pt 35%, safetensors 25%)"
        )
        outs = itertools.count()
        out = root / "out"

        def fresh_out() -> None:
            # a new folder per case, and nothing deleted until every case is timed: on ext4
            # without a journal, each new inode skips the ones deleted in the last minute or
            # more (fs/ext4/ialloc.c, find_inode_bit and recently_deleted: 60 s, 360 s while
            # the inode table block is dirty), so removing one case's 1,000 files would slow
            # the next case's file creations by whatever that case's own cost is
            nonlocal out
            out = root / f"out-{next(outs)}"
            out.mkdir()
            os.sync()  # the last case's writeback is not charged to this one

        def tireg_inspect() -> None:
            for path in paths:
                describe(path)

        def base_inspect() -> None:
            for path in paths:
                baseline_load(path)

        def tireg_convert() -> None:
            convert(paths, "tireg", out_dir=out)

        def tireg_convert_each() -> None:
            for path in paths:
                convert([path], "tireg", out_dir=out)

        def base_convert() -> None:
            for path in paths:
                tensors = baseline_load(path)
                fixed = {k: v.float().contiguous() for k, v in tensors.items()}
                save_file(fixed, out / f"{path.stem}.safetensors")

        def base_convert_fsync() -> None:
            for path in paths:
                tensors = baseline_load(path)
                fixed = {k: v.float().contiguous() for k, v in tensors.items()}
                with (out / f"{path.stem}.safetensors").open("wb") as stream:
                    stream.write(save(fixed))
                    stream.flush()
                    os.fsync(stream.fileno())
            fd = os.open(out, os.O_RDONLY)
            os.fsync(fd)
            os.close(fd)

        cases = {
            "tireg inspect": tireg_inspect,
            "base inspect": base_inspect,
            "tireg convert": tireg_convert,
            "base convert": base_convert,
            "tireg convert each": tireg_convert_each,
            "base convert fsync": base_convert_fsync,
        }
        for _ in range(args.repeat):
            for label, fn in cases.items():
                fresh_out()
                wall, cpu = timed(fn)
                best[label] = min(best.get(label, float("inf")), wall)
                best_cpu[label] = min(best_cpu.get(label, float("inf")), cpu)
    n = len(paths)

    def line(label: str, seconds: float) -> str:
        return f"{label:34s} {n / seconds:7.0f} files/s  ({seconds * 1e3 / n:6.3f} ms/file)"

    tireg_total = best["tireg inspect"] + best["tireg convert"]
    base_total = best["base inspect"] + best["base convert"]
    print(line("tireg describe (inspect)", best["tireg inspect"]))
    print(line("torch.load/load_file", best["base inspect"]))
    print(line("tireg convert --to tireg (one call)", best["tireg convert"]))
    print(line("load + safetensors save_file", best["base convert"]))
    print(line("tireg inspect+convert", tireg_total))
    print(line("baseline load + load+save", base_total))
    print(line("tireg convert, one call per file", best["tireg convert each"]))
    print(line("load + save + fsync (no rename)", best["base convert fsync"]))
    ratios = {
        "inspect": best["base inspect"] / best["tireg inspect"],
        "convert": best["base convert"] / best["tireg convert"],
        "total": base_total / tireg_total,
    }
    print(
        "ratio, tireg throughput / baseline: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items())
    )
    cpu_ratios = {
        "inspect": best_cpu["base inspect"] / best_cpu["tireg inspect"],
        "convert": best_cpu["base convert"] / best_cpu["tireg convert"],
        "total": (best_cpu["base inspect"] + best_cpu["base convert"])
        / (best_cpu["tireg inspect"] + best_cpu["tireg convert"]),
    }
    print(
        "ratio by CPU time: "
        + ", ".join(f"{k} {v:.2f}x" for k, v in cpu_ratios.items())
        + f" (tireg inspect {best_cpu['tireg inspect'] * 1e3 / n:.3f} ms/file, "
        f"convert {best_cpu['tireg convert'] * 1e3 / n:.3f}; baseline "
        f"{best_cpu['base inspect'] * 1e3 / n:.3f}, {best_cpu['base convert'] * 1e3 / n:.3f})"
    )
    print(
        "ratio, convert one call per file / baseline: "
        f"{best['base convert'] / best['tireg convert each']:.2f}x; "
        f"convert / fsyncing baseline: {best['base convert fsync'] / best['tireg convert']:.2f}x"
    )
    print(
        "note: the plain baseline never fsyncs; tireg fsyncs each file before its atomic rename "
        "and each output folder once per call"
    )


if __name__ == "__main__":
    main()

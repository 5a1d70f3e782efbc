"""Benchmark: our converters vs label-studio-sdk's Converter on the same synthetic export.

Synthesises N image-bbox tasks and N text-ner tasks from the Label Studio fixture set (new task,
annotation and file ids), converts them to COCO, YOLO, CSV (image-bbox) and CONLL2003 (text-ner)
with both implementations, each run in a fresh subprocess (so peak RSS is per run), checks that
the outputs are equal, and prints times, the speed ratio and peak memory: the converting
process's own peak, and for ours also the peak of its largest worker process (per-task formats
use worker processes for big inputs; see converters/parallel.py).

    python bench/bench_convert.py --tasks 100000
    python bench/bench_convert.py --tasks 2000 --formats COCO,CSV
    python bench/bench_convert.py --tasks 100000 --ours-path /tmp/old-checkout   # another version of ours
    python bench/bench_convert.py --tasks 100000 --workers 0     # ours in one process

Each side runs ``--repeat`` times (default 3), alternating, and the best time of each is
compared (this machine's timings are noisy). Inputs are kept (and reused) with ``--workdir DIR``.
Every run writes into a new directory, and all of them are removed only at the end: mass
deletions slow the file creation that follows them (YOLO writes one file per image). For YOLO
the bench also times creating the same label files with a plain loop: the file system's floor.

label-studio-sdk is a bench/test dependency only (``pip install label-studio-sdk``); with
``--no-sdk`` only our side runs.
"""

from __future__ import annotations

import argparse
import copy
import filecmp
import json
import os
import posixpath
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "labelstudio-1.23.2" / "exports"
FORMAT_PROJECT = {"COCO": "image-bbox", "YOLO": "image-bbox", "CSV": "image-bbox", "CONLL2003": "text-ner"}


def synthesize(slug: str, n: int, path: Path) -> None:
    """Write an n-task export made by replicating the fixture tasks with fresh ids."""
    base = json.loads((FIXTURES / slug / "JSON.json").read_text(encoding="utf-8"))
    ann_id = 0
    with open(path, "w", encoding="utf-8") as out:
        out.write("[")
        for i in range(n):
            task = copy.deepcopy(base[i % len(base)])
            task_id = i + 1
            task["id"] = task_id
            for a in task["annotations"]:
                ann_id += 1
                a["id"] = ann_id
                a["task"] = task_id
            for key, value in task["data"].items():
                if key == "image" and isinstance(value, str):
                    head, name = posixpath.split(value)
                    stem, ext = posixpath.splitext(name)
                    task["data"][key] = f"{head}/{stem}-{task_id}{ext}"
            if i:
                out.write(",")
            out.write(json.dumps(task, ensure_ascii=False, separators=(",", ":")))  # as Label Studio writes it
        out.write("]")


def worker(impl: str, fmt: str, src: str, config: str, out: str, ours_path: str, workers: str) -> None:
    import resource

    start = time.perf_counter()
    if impl == "ours":
        sys.path.insert(0, ours_path)
        import converters
        from converters.inputs import iter_input_tasks

        cfg = converters.parse_label_config(Path(config))
        options = converters.ConvertOptions(warn=lambda *a: None)
        if workers != "auto":
            options.workers = int(workers)
        converters.get(fmt).convert(iter_input_tasks(src), cfg, Path(out), options)
    else:
        import logging

        logging.disable(logging.WARNING)
        from label_studio_sdk.converter import Converter

        conv = Converter(Path(config).read_text(encoding="utf-8"), project_dir=None, download_resources=False)
        conv.convert(src, out, fmt, is_dir=False)
    seconds = time.perf_counter() - start
    # VmHWM is this process's own high-water mark (ru_maxrss may carry the parent's over exec)
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
    except OSError:
        pass
    # worker processes (ours, for big inputs): the largest one's peak; they have exited by now
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_mb": peak_kb / 1024, "workers_peak_mb": children_kb / 1024}))


def run_worker(impl: str, fmt: str, src: Path, config: Path, out: Path, ours_path: Path = REPO,
               workers: str = "auto") -> dict:
    assert not out.exists(), out  # a new output dir for every run (see main: no deletions between runs)
    if hasattr(os, "sync"):
        os.sync()  # the previous run's files are written out before this one starts
    proc = subprocess.run(
        [sys.executable, __file__, "--_worker", impl, fmt, str(src), str(config), str(out), str(ours_path), workers],
        capture_output=True, text=True, cwd=str(out.parent),
    )
    if proc.returncode != 0:
        raise SystemExit(f"{impl} {fmt} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _norm_coco(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("info")
    for image in data["images"]:  # documented difference: media path of uploaded files
        image["file_name"] = posixpath.basename(image["file_name"])
    return data


def outputs_equal(fmt: str, ours: Path, sdk: Path) -> tuple[bool, str]:
    if fmt == "COCO":
        return _norm_coco(ours / "result.json") == _norm_coco(sdk / "result.json"), "result.json parsed"
    if fmt == "CSV":
        return filecmp.cmp(ours / "result.csv", sdk / "result.csv", shallow=False), "bytes"
    if fmt == "CONLL2003":
        return filecmp.cmp(ours / "result.conll", sdk / "result.conll", shallow=False), "bytes"
    if fmt == "YOLO":
        a = sorted(p.name for p in (ours / "labels").iterdir())
        b = sorted(p.name for p in (sdk / "labels").iterdir())
        if a != b:
            return False, "label file names differ"
        same = all(filecmp.cmp(ours / "labels" / n, sdk / "labels" / n, shallow=False) for n in a)
        same = same and filecmp.cmp(ours / "classes.txt", sdk / "classes.txt", shallow=False)
        return same, f"{len(a)} label files + classes.txt, bytes"
    return False, "no check"


def files_floor(labels: Path, out: Path) -> float:
    """Seconds to create the label files of ``labels`` again under ``out`` (same names, same bytes)
    with a plain loop: what the file system alone costs, for YOLO's one file per image."""
    data = [(p.name, p.read_bytes()) for p in labels.iterdir()]
    out.mkdir(parents=True)
    if hasattr(os, "sync"):
        os.sync()
    dir_fd = os.open(out, os.O_RDONLY)
    start = time.perf_counter()
    for name, content in data:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666, dir_fd=dir_fd)
        os.write(fd, content)
        os.close(fd)
    seconds = time.perf_counter() - start
    os.close(dir_fd)
    return seconds


def _workers(result: dict) -> str:
    """Peak RSS of the largest worker process, if ours used any ("-" otherwise)."""
    mb = result.get("workers_peak_mb") or 0.0
    return f"{mb:.1f}" if mb > 1 else "-"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=100_000, help="tasks per synthetic export (default 100000)")
    parser.add_argument("--formats", default="COCO,CSV,CONLL2003,YOLO",
                        help="formats, run in this order (default: YOLO last: its 100,000 files keep the file "
                             "system busy for a while after, which would slow the formats that follow)")
    parser.add_argument("--no-sdk", action="store_true", help="only run our converters")
    parser.add_argument("--workdir", help="keep inputs/outputs here (default: a temp dir)")
    parser.add_argument("--ours-path", default=str(REPO),
                        help="directory to import our `converters` package from (default: this repository)")
    parser.add_argument("--workers", default="auto",
                        help="worker processes for ours (ConvertOptions.workers; default: auto, 0: one process)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each side, alternating; the best (lowest) time of each is compared (default 3)")
    parser.add_argument("--_worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker(*args._worker)
        return 0
    if not FIXTURES.is_dir():
        print(f"fixture set not found: {FIXTURES}", file=sys.stderr)
        return 2
    use_sdk = not args.no_sdk
    if use_sdk:
        try:
            import label_studio_sdk  # noqa: F401
        except ImportError:
            print("label-studio-sdk is not installed (pip install label-studio-sdk); running ours only")
            use_sdk = False
    formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    tmp = None
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_convert_")
        work = Path(tmp.name)
    inputs: dict[str, Path] = {}
    for slug in sorted({FORMAT_PROJECT[f] for f in formats}):
        src = work / f"{slug}-{args.tasks}.json"
        if not src.exists():
            t = time.perf_counter()
            synthesize(slug, args.tasks, src)
            print(f"synthesised {args.tasks} {slug} tasks -> {src} ({src.stat().st_size / 1e6:.1f} MB, "
                  f"{time.perf_counter() - t:.1f}s)")
        inputs[slug] = src

    # Every run writes into a new directory and all of them are removed at the end: deleting
    # 100,000 files right before a run slows that run's file creation several times over (the
    # file system is still busy with the deletions), which would make YOLO's times a lottery.
    runs_dir = work / f"runs-{os.getpid()}"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    print(f"\nbest of {args.repeat} runs per side, alternating")
    print(f"{'format':<10} {'ours s':>8} {'sdk s':>8} {'speedup':>8} {'ours MB':>8} {'worker MB':>9} "
          f"{'sdk MB':>8}  equal")
    all_equal = True
    floors = []
    for fmt in formats:
        slug = FORMAT_PROJECT[fmt]
        config = FIXTURES / slug / "label_config.xml"
        best: dict[str, dict] = {}
        for i in range(args.repeat):
            for impl in ("ours", "sdk") if use_sdk else ("ours",):
                out = runs_dir / f"{impl}-{fmt}-{i}"
                if impl == "ours":
                    result = run_worker("ours", fmt, inputs[slug], config, out, Path(args.ours_path).resolve(),
                                        args.workers)
                else:
                    result = run_worker("sdk", fmt, inputs[slug], config, out)
                result["out"] = out
                if impl not in best or result["seconds"] < best[impl]["seconds"]:
                    best[impl] = result
        ours = best["ours"]
        if fmt == "YOLO":
            floors.append(files_floor(ours["out"] / "labels", runs_dir / "floor-YOLO"))
        if use_sdk:
            sdk = best["sdk"]
            equal, how = outputs_equal(fmt, ours["out"], sdk["out"])
            all_equal &= equal
            print(f"{fmt:<10} {ours['seconds']:>8.2f} {sdk['seconds']:>8.2f} {sdk['seconds'] / ours['seconds']:>7.1f}x "
                  f"{ours['peak_mb']:>8.1f} {_workers(ours):>9} {sdk['peak_mb']:>8.1f}  {equal} ({how})")
        else:
            print(f"{fmt:<10} {ours['seconds']:>8.2f} {'-':>8} {'-':>8} {ours['peak_mb']:>8.1f} {_workers(ours):>9} "
                  f"{'-':>8}")
    if floors:
        print(f"\nYOLO file system floor: creating its {args.tasks} label files with a plain loop takes "
              f"{floors[0]:.2f} s on this file system")
    shutil.rmtree(runs_dir, ignore_errors=True)
    if tmp is not None:
        tmp.cleanup()
    return 0 if all_equal else 1


if __name__ == "__main__":
    sys.exit(main())

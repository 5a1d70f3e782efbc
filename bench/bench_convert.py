"""Benchmark: our converters vs label-studio-sdk's Converter on the same synthetic export.

Synthesises N image-bbox tasks and N text-ner tasks from the Label Studio fixture set (new task,
annotation and file ids), written as Label Studio writes its JSON export (compact, "/" escaped
as "\\/"; ``--json-module-input``: as the json module writes it, like syncd's own JSON output),
converts them to JSON, JSON_MIN, CSV, COCO, VOC, YOLO, YOLO_OBB (image-bbox) and CONLL2003
(text-ner) with both implementations, each run in a fresh subprocess (imports included, so peak
RSS is per run), checks that the outputs are equal, and prints times, the speed ratio and peak
memory: the converting process's own peak, and for ours also the peak of its largest worker
process (per-task formats use worker processes for big inputs; see converters/parallel.py).
Ours converts JSON with ``syncd convert``'s task shape (``syncd.document.label_studio_export``).

    python bench/bench_convert.py --tasks 100000
    python bench/bench_convert.py --tasks 2000 --formats COCO,CSV
    python bench/bench_convert.py --tasks 100000 --ours-path /tmp/old-checkout   # another version of ours
    python bench/bench_convert.py --tasks 100000 --workers 0     # ours in one process
    python bench/bench_convert.py --tasks 10000 100000 1000000 --formats COCO,CSV,YOLO --repeat 2 2 1
    python bench/bench_convert.py --tasks 100000 --busy 1     # a busy machine: 1 CPU-bound process beside

With several ``--tasks`` sizes (smallest first) each size runs as one table, then a last table
shows how cost grows: per-task wall and CPU time of each side's best run, and each side's peak
RSS as a ratio to the smallest size (``--repeat``: one number per size, or one for all).

Each format runs ``--repeat`` pairs (default 3): ours and the SDK one right after the other,
alternating which goes first, and the speed-up is taken pair by pair (this machine's timings are
noisy, and other work on it changes from minute to minute); the 1-minute load average before
each pair is printed with them, and the CPU-time ratio (sdk / ours, workers included): what the
speed-up tends to when every CPU is taken by other work. ``--busy N`` keeps N CPU-bound
processes running for the whole bench, so that a busy machine is a setting, not luck.
Inputs are kept (and reused) with ``--workdir DIR``. Every run
writes into a new directory, and all of them are removed only at the end: mass deletions slow
the file creation that follows them (VOC and YOLO write one file per image). For VOC and YOLO
the bench also times creating the same files with a plain loop: the file system's floor.

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
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "labelstudio-1.23.2" / "exports"
FORMAT_PROJECT = {"JSON": "image-bbox", "JSON_MIN": "image-bbox", "CSV": "image-bbox", "COCO": "image-bbox",
                  "VOC": "image-bbox", "YOLO": "image-bbox", "YOLO_OBB": "image-bbox", "CONLL2003": "text-ner"}


def synthesize(slug: str, n: int, path: Path, escape_slashes: bool = True) -> None:
    """Write an n-task export made by replicating the fixture tasks with fresh ids, compact and,
    with ``escape_slashes``, with every "/" written "\\/" as Label Studio's export has it."""
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
            text = json.dumps(task, ensure_ascii=False, separators=(",", ":"))
            out.write(text.replace("/", "\\/") if escape_slashes else text)  # ("/" is only found in strings)
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
        tasks = iter_input_tasks(src)
        if fmt == "JSON":  # as `syncd convert` does: Label Studio's export shape
            from syncd.document import label_studio_export

            if hasattr(options, "task_shape"):
                options.task_shape = label_studio_export
            else:  # a version before ConvertOptions.task_shape: the CLI wrapped the tasks
                tasks = (label_studio_export(t) if isinstance(t, dict) else t for t in tasks)
        converters.get(fmt).convert(tasks, cfg, Path(out), options)
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
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    print(json.dumps({"seconds": seconds, "cpu_s": cpu_s, "peak_mb": peak_kb / 1024,
                      "workers_peak_mb": children.ru_maxrss / 1024}))


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


_SDK_CACHE_PREFIX = re.compile(r"^[0-9a-f]{8}__")


def _without_cache_prefix(path: Path) -> bytes:
    """An SDK VOC file with its image's cache prefix taken out of <filename>."""
    data = path.read_bytes()
    prefix = _SDK_CACHE_PREFIX.match(path.name)
    if prefix:
        data = data.replace(b"<filename>" + prefix.group().encode(), b"<filename>", 1)
    return data


def _norm_coco(path: Path) -> dict:
    data = json.loads(path.read_text(encoding="utf-8"))
    data.pop("info")
    for image in data["images"]:  # documented difference: media path of uploaded files
        image["file_name"] = posixpath.basename(image["file_name"])
    return data


def outputs_equal(fmt: str, ours: Path, sdk: Path) -> tuple[bool, str]:
    if fmt == "JSON":  # the SDK copies the export; so do we where no task changes
        return filecmp.cmp(ours / "result.json", sdk / "result.json", shallow=False), "result.json, bytes"
    if fmt == "JSON_MIN":
        # parsed: Label Studio writes "/" as "\\/", the json module does not
        with open(ours / "result.json", "rb") as a, open(sdk / "result.json", "rb") as b:
            return json.load(a) == json.load(b), "result.json parsed"
    if fmt == "VOC":
        # documented difference: without downloading, the SDK names the image of a remote URL
        # "<8 hex>__<name>" (its cache name); Label Studio's own export (and ours) just <name>
        theirs = {_SDK_CACHE_PREFIX.sub("", p.name): p for p in (sdk / "Annotations").iterdir()}
        names = sorted(p.name for p in (ours / "Annotations").iterdir())
        if names != sorted(theirs):
            return False, "annotation file names differ"
        same = all((ours / "Annotations" / n).read_bytes() == _without_cache_prefix(theirs[n]) for n in names)
        return same, f"{len(names)} annotation files, bytes (remote images' cache prefix dropped)"
    if fmt == "COCO":
        return _norm_coco(ours / "result.json") == _norm_coco(sdk / "result.json"), "result.json parsed"
    if fmt == "CSV":
        return filecmp.cmp(ours / "result.csv", sdk / "result.csv", shallow=False), "bytes"
    if fmt == "CONLL2003":
        return filecmp.cmp(ours / "result.conll", sdk / "result.conll", shallow=False), "bytes"
    if fmt in ("YOLO", "YOLO_OBB"):
        a = sorted(p.name for p in (ours / "labels").iterdir())
        b = sorted(p.name for p in (sdk / "labels").iterdir())
        if a != b:
            return False, "label file names differ"
        same = all(filecmp.cmp(ours / "labels" / n, sdk / "labels" / n, shallow=False) for n in a)
        same = same and filecmp.cmp(ours / "classes.txt", sdk / "classes.txt", shallow=False)
        return same, f"{len(a)} label files + classes.txt, bytes"
    return False, "no check"


def files_floor(labels: Path, out: Path) -> tuple[float, float, int]:
    """Seconds to create the files of ``labels`` again under ``out`` (same names, same bytes) with a
    plain loop, the kernel's CPU seconds in them, and how many files: what the file system alone
    costs, for one file per image (the kernel's part is CPU that no converter writing these files
    can save, whatever it does in Python)."""
    data = [(p.name, p.read_bytes()) for p in labels.iterdir()]
    out.mkdir(parents=True)
    if hasattr(os, "sync"):
        os.sync()
    dir_fd = os.open(out, os.O_RDONLY)
    kernel = os.times().system
    start = time.perf_counter()
    for name, content in data:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666, dir_fd=dir_fd)
        os.write(fd, content)
        os.close(fd)
    seconds = time.perf_counter() - start
    kernel = os.times().system - kernel
    os.close(dir_fd)
    return seconds, kernel, len(data)


def _workers(result: dict) -> str:
    """Peak RSS of the largest worker process, if ours used any ("-" otherwise)."""
    mb = result.get("workers_peak_mb") or 0.0
    return f"{mb:.1f}" if mb > 1 else "-"


def bench_size(args: argparse.Namespace, tasks: int, repeat: int, formats: list[str], use_sdk: bool,
               work: Path, runs_dir: Path) -> list[dict]:
    """The pairs of every format on an export of ``tasks`` tasks (synthesised into ``work`` unless
    there already), printed as a table; one row per format: the best run of each side, the pairs'
    ratios and loads, whether the outputs are equal."""
    inputs: dict[str, Path] = {}
    style = "json-module" if args.json_module_input else "label-studio"
    for slug in sorted({FORMAT_PROJECT[f] for f in formats}):
        src = work / f"{slug}-{tasks}-{style}.json"
        if not src.exists():
            t = time.perf_counter()
            synthesize(slug, tasks, src, escape_slashes=not args.json_module_input)
            print(f"synthesised {tasks} {slug} tasks -> {src} ({src.stat().st_size / 1e6:.1f} MB, "
                  f"{time.perf_counter() - t:.1f}s)")
        inputs[slug] = src

    print(f"\n{repeat} pairs of runs per format, alternating which side runs first; the speed-up is "
          f"taken pair by pair (sdk / ours); load: the 1-minute load average before each pair "
          f"({os.cpu_count()} CPUs)")
    print(f"{'format':<10} {'ours s':>7} {'sdk s':>7} {'speed-up per pair':>22} {'median':>7} {'cpu x':>6} "
          f"{'load':>11} {'ours MB':>8} {'worker MB':>9} {'sdk MB':>7}  equal")
    rows: list[dict] = []
    floors = []
    for fmt in formats:
        slug = FORMAT_PROJECT[fmt]
        config = FIXTURES / slug / "label_config.xml"
        pairs: list[dict[str, dict]] = []
        loads: list[float] = []
        for i in range(repeat):
            loads.append(os.getloadavg()[0])
            pair: dict[str, dict] = {}
            order = ("ours", "sdk") if i % 2 == 0 else ("sdk", "ours")
            for impl in order if use_sdk else ("ours",):
                out = runs_dir / f"{impl}-{fmt}-{tasks}-{i}"
                result = run_worker(impl, fmt, inputs[slug], config, out, Path(args.ours_path).resolve(),
                                    args.workers)
                result["out"] = out
                pair[impl] = result
            pairs.append(pair)
        ours = min((p["ours"] for p in pairs), key=lambda r: r["seconds"])
        row = {"tasks": tasks, "format": fmt, "ours": ours, "sdk": None, "ratios": [], "loads": loads, "equal": None}
        load = f"{min(loads):.1f}-{max(loads):.1f}"
        if fmt in ("YOLO", "VOC"):
            sub = "labels" if fmt == "YOLO" else "Annotations"
            floors.append((fmt, files_floor(ours["out"] / sub, runs_dir / f"floor-{fmt}-{tasks}")))
        if use_sdk:
            sdk = min((p["sdk"] for p in pairs), key=lambda r: r["seconds"])
            ratios = [p["sdk"]["seconds"] / p["ours"]["seconds"] for p in pairs]
            equal, how = outputs_equal(fmt, ours["out"], sdk["out"])
            row.update(sdk=sdk, ratios=ratios, equal=equal)
            per_pair = " ".join(f"{r:.1f}" for r in ratios)
            cpu = statistics.median(p["sdk"]["cpu_s"] / p["ours"]["cpu_s"] for p in pairs)
            print(f"{fmt:<10} {ours['seconds']:>7.2f} {sdk['seconds']:>7.2f} {per_pair:>22} "
                  f"{statistics.median(ratios):>6.1f}x {cpu:>5.1f}x {load:>11} {ours['peak_mb']:>8.1f} "
                  f"{_workers(ours):>9} {sdk['peak_mb']:>7.1f}  {equal} ({how})", flush=True)
        else:
            print(f"{fmt:<10} {ours['seconds']:>7.2f} {'-':>7} {'-':>22} {'-':>7} {'-':>6} {load:>11} "
                  f"{ours['peak_mb']:>8.1f} {_workers(ours):>9} {'-':>7}", flush=True)
        rows.append(row)
    print("(ours s, sdk s: the best run of each side; cpu x: median of the pairs' CPU-time ratios, sdk / ours "
          "with its workers; MB: peak resident memory of the converting process, of ours's largest worker "
          "process, of the SDK's process)")
    for fmt, (seconds, kernel, count) in floors:
        print(f"{fmt} file system floor: creating its {count} files again with a plain loop takes "
              f"{seconds:.2f} s on this file system, {kernel:.2f} s of it the kernel's CPU time")
    return rows


def _per_task_us(seconds: float, tasks: int) -> str:
    return f"{seconds / tasks * 1e6:.1f}"


def print_growth(rows: list[dict]) -> None:
    """How cost grows with the number of tasks: per format and size, each side's best wall time and
    the CPU time of that run (the workers' included) per task, and each side's peak RSS as a ratio
    to the same format at the smallest size."""
    print("\nGrowth with the number of tasks: us/task = best wall time / tasks; cpu us/task = CPU time "
          "(user + system, workers included) of that run / tasks; RSS x: peak RSS / the same side's at the "
          "smallest size (ours: converting process, + largest worker)")
    print(f"{'tasks':>8} {'format':<10} {'ours s':>8} {'sdk s':>8} {'ours us/task':>13} {'sdk us/task':>12} "
          f"{'ours cpu us':>12} {'sdk cpu us':>11} {'speed-up per pair':>18} {'load':>9} "
          f"{'ours MB (+worker)':>18} {'sdk MB':>8} {'ours RSS x':>12} {'sdk RSS x':>10}  equal")
    smallest: dict[str, dict] = {}
    for row in rows:
        first = smallest.setdefault(row["format"], row)
        ours, sdk, tasks = row["ours"], row["sdk"], row["tasks"]
        mb = f"{ours['peak_mb']:.0f}" + (f" (+{ours['workers_peak_mb']:.0f})" if _workers(ours) != "-" else "")
        ours_x = f"{ours['peak_mb'] / first['ours']['peak_mb']:.2f}"
        if ours.get("workers_peak_mb", 0) > 1 and first["ours"].get("workers_peak_mb", 0) > 1:
            ours_x += f" (+{ours['workers_peak_mb'] / first['ours']['workers_peak_mb']:.2f})"
        if sdk:
            sdk_cols = (f"{sdk['seconds']:>8.2f}", f"{_per_task_us(sdk['seconds'], tasks):>12}",
                        f"{_per_task_us(sdk['cpu_s'], tasks):>11}", f"{sdk['peak_mb']:>8.0f}",
                        f"{sdk['peak_mb'] / first['sdk']['peak_mb']:>10.2f}")
        else:
            sdk_cols = (f"{'-':>8}", f"{'-':>12}", f"{'-':>11}", f"{'-':>8}", f"{'-':>10}")
        per_pair = " ".join(f"{r:.1f}" for r in row["ratios"]) or "-"
        load = f"{min(row['loads']):.1f}-{max(row['loads']):.1f}"
        print(f"{tasks:>8} {row['format']:<10} {ours['seconds']:>8.2f} {sdk_cols[0]} "
              f"{_per_task_us(ours['seconds'], tasks):>13} {sdk_cols[1]} {_per_task_us(ours['cpu_s'], tasks):>12} "
              f"{sdk_cols[2]} {per_pair:>18} {load:>9} {mb:>18} {sdk_cols[3]} {ours_x:>12} {sdk_cols[4]}  "
              f"{'-' if row['equal'] is None else row['equal']}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, nargs="+", default=[100_000],
                        help="tasks per synthetic export (default 100000); several sizes, smallest first: "
                             "each runs in turn, then a table of per-task cost and peak RSS against the first")
    parser.add_argument("--formats", default="JSON,JSON_MIN,CSV,COCO,CONLL2003,VOC,YOLO,YOLO_OBB",
                        help="formats, run in this order (default: the formats that write a file per image "
                             "last: their 100,000 files keep the file system busy for a while after, which "
                             "would slow the formats that follow)")
    parser.add_argument("--json-module-input", action="store_true",
                        help="write the synthetic export as the json module does (\"/\" not escaped: syncd's "
                             "own JSON output) instead of as Label Studio does (\"\\/\"); JSON then copies it")
    parser.add_argument("--no-sdk", action="store_true", help="only run our converters")
    parser.add_argument("--workdir", help="keep inputs/outputs here (default: a temp dir)")
    parser.add_argument("--ours-path", default=str(REPO),
                        help="directory to import our `converters` package from (default: this repository)")
    parser.add_argument("--workers", default="auto",
                        help="worker processes for ours (ConvertOptions.workers; default: auto, 0: one process)")
    parser.add_argument("--repeat", type=int, nargs="+", default=[3],
                        help="pairs of runs (ours, sdk) per format, alternating which runs first (default 3); "
                             "one number per --tasks size, or one for all")
    parser.add_argument("--busy", type=int, default=0, metavar="N",
                        help="keep N CPU-bound processes running beside the bench (a busy machine)")
    parser.add_argument("--_worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._worker:
        worker(*args._worker)
        return 0
    from bench_resync import busy, precompile

    precompile(Path(args.ours_path))
    if not FIXTURES.is_dir():
        print(f"fixture set not found: {FIXTURES}", file=sys.stderr)
        return 2
    if len(args.repeat) not in (1, len(args.tasks)):
        print("--repeat takes one number, or one per --tasks size", file=sys.stderr)
        return 2
    repeats = args.repeat * len(args.tasks) if len(args.repeat) == 1 else args.repeat
    use_sdk = not args.no_sdk
    if use_sdk:
        try:
            import label_studio_sdk  # noqa: F401
        except ImportError:
            print("label-studio-sdk is not installed (pip install label-studio-sdk); running ours only")
            use_sdk = False
    formats = [f.strip().upper() for f in args.formats.split(",") if f.strip()]
    unknown = [f for f in formats if f not in FORMAT_PROJECT]
    if unknown:
        print(f"unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMAT_PROJECT)}", file=sys.stderr)
        return 2
    tmp = None
    if args.workdir:
        work = Path(args.workdir).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="bench_convert_")
        work = Path(tmp.name)

    # Every run writes into a new directory and all of them are removed at the end: deleting
    # 100,000 files right before a run slows that run's file creation several times over (the
    # file system is still busy with the deletions), which would make YOLO's times a lottery.
    runs_dir = work / f"runs-{os.getpid()}"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir()
    rows: list[dict] = []
    with busy(args.busy):
        for tasks, repeat in zip(args.tasks, repeats, strict=True):
            if len(args.tasks) > 1:
                print(f"\n=== {tasks} tasks ===", flush=True)
            rows += bench_size(args, tasks, repeat, formats, use_sdk, work, runs_dir)
    if len(args.tasks) > 1:
        print_growth(rows)
    shutil.rmtree(runs_dir, ignore_errors=True)
    if tmp is not None:
        tmp.cleanup()
    return 0 if all(row["equal"] is not False for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

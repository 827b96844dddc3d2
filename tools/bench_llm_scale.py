"""Cost of the LLM commands against model size: wall time and peak RSS of export, INT4 GPTQ, W8A8, quantize-kv.

    python tools/make_scale_models.py --out /work/scale 360m 1.1b
    python tools/bench_llm_scale.py --out /work/scale/out --model 135m=smollm2 --model 360m=/work/scale/360m \
        --model 1.1b=/work/scale/1.1b --json docs/llm-scale.json

Each step is the ``qdq`` command a user runs, in its own process under ``/usr/bin/time -v`` (peak RSS =
its "Maximum resident set size", file-backed pages of memory-mapped weights included), one at a time.
FP32 weight bytes are the exported ``.onnx`` plus its ``.onnx.data``. A step whose log in ``--out`` shows
a finished run (exit 0, output present) is read back instead of rerun unless ``--rerun``, so a long table
can be built over several sessions. The 360M/1.1B models have random weights: costs, not quality.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

STEPS = {
    "export": ["export-lm", "--model", "{model}", "-o", "{fp32}"],
    "gptq": ["quantize-weights", "{fp32}", "--weights", "int4", "--group-size", "128", "--algo", "gptq",
             "--data", "builtin:corpus", "-o", "{out}"],
    "w8a8": ["quantize-w8a8", "{fp32}", "--data", "builtin:corpus", "-o", "{out}"],
    "kv": ["quantize-kv", "{fp32}", "-o", "{out}"],
}
OUTPUTS = {"export": "fp32", "gptq": "int4", "w8a8": "w8a8", "kv": "kv8"}
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.cpu import cpu_int8  # noqa: E402


def parse_time_v(text: str) -> dict[str, float] | None:
    """Wall seconds, peak RSS bytes, CPU seconds and exit status from ``/usr/bin/time -v`` output."""
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text)
    status = re.search(r"Exit status: (\d+)", text)
    if not (rss and wall and status):
        return None
    seconds = 0.0
    for part in wall.group(1).split(":"):
        seconds = seconds * 60 + float(part)
    cpu = sum(float(m) for m in re.findall(r"(?:User|System) time \(seconds\): ([\d.]+)", text))
    return {"seconds": seconds, "peak_rss": int(rss.group(1)) * 1024, "cpu_seconds": cpu,
            "status": int(status.group(1))}


def weight_bytes(fp32: Path) -> int:
    data = fp32.with_name(fp32.name + ".data")
    return fp32.stat().st_size + (data.stat().st_size if data.is_file() else 0)


def run_step(name: str, step: str, model: str, out: Path, rerun: bool) -> dict:
    fp32 = out / f"{name}.fp32.onnx"
    target = out / f"{name}.{OUTPUTS[step]}.onnx"
    log_path = out / f"{step}_{name}.log"
    args = [a.format(model=model, fp32=fp32, out=target) for a in STEPS[step]]
    if not rerun and log_path.is_file() and target.is_file():
        parsed = parse_time_v(log_path.read_text(errors="replace"))
        if parsed and parsed["status"] == 0:
            return {"model": name, "step": step, "reused_log": str(log_path), **parsed}
    if step != "export" and not fp32.is_file():
        raise SystemExit(f"{fp32} is missing: run the export step first")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = ["nice", "/usr/bin/time", "-v", sys.executable, "-m", "converter.cli", *args]
    load = os.getloadavg()[0]
    print(f"[{name} {step}] {' '.join(args)} (load {load:.1f})", flush=True)
    with log_path.open("w") as fh:
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    parsed = parse_time_v(log_path.read_text(errors="replace")) or {"status": rc}
    return {"model": name, "step": step, "load_before": round(load, 2), **parsed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="NAME=HF folder or built-in name")
    parser.add_argument("--out", type=Path, required=True, help="folder for the ONNX files and each step's log")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=list(STEPS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rerun", action="store_true", help="rerun steps that already have a finished log")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in args.model:
        name, _, model = spec.partition("=")
        for step in args.steps:
            row = run_step(name, step, model, args.out, args.rerun)
            fp32 = args.out / f"{name}.fp32.onnx"
            if fp32.is_file():
                row["fp32_weight_bytes"] = weight_bytes(fp32)
                if "peak_rss" in row:
                    row["rss_over_weights"] = round(row["peak_rss"] / row["fp32_weight_bytes"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nCPU: {cpu_int8().describe()}, {os.cpu_count()} cores; load now {os.getloadavg()[0]:.1f}; "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| model | FP32 weights GB | step | wall s | CPU s | peak RSS GB | RSS / weights |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        ok = r.get("status") == 0
        print(f"| {r['model']} | {r.get('fp32_weight_bytes', 0) / 1e9:.2f} | {r['step']} | "
              f"{r.get('seconds', 0):.0f} | {r.get('cpu_seconds', 0):.0f} | {r.get('peak_rss', 0) / 1e9:.2f} | "
              f"{r.get('rss_over_weights', '')}{'' if ok else ' (failed: exit ' + str(r.get('status')) + ')'} |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu_int8().describe(), "date": time.strftime("%Y-%m-%d"), "rows": rows},
                                        indent=1) + "\n")


if __name__ == "__main__":
    main()

"""``python -m bench``: the limiter benchmark (prints numbers; not a test, nothing fails on a miss).

Phases: ``render`` (pure, no cluster), then on one real test bed (local apiserver, real Prometheus
scraping an exporter, ``slime run --modules limiter``): set-up of N limiters, ``quiet`` (writes
when nothing changes), ``apply`` (apply-to-EnvoyFilter latency), ``reaction`` (metric crossing
to EnvoyFilter change). Results go to stdout and ``bench/results/latest.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cluster, render

PHASES = ("render", "quiet", "apply", "reaction")
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", choices=PHASES, help="run only these phases (repeatable)")
    p.add_argument("--limiters", type=int, default=1000, help="SmartLimiters present (default 1000)")
    p.add_argument("--namespaces", type=int, default=10, help="spread over this many namespaces (default 10)")
    p.add_argument("--refresh", type=float, default=1.0, help="limiter refresh interval, seconds (default 1)")
    p.add_argument("--scrape", type=float, default=1.0, help="Prometheus scrape interval, seconds (default 1)")
    p.add_argument("--rate", type=float, default=10.0, help="applies per second (default 10)")
    p.add_argument("--duration", type=float, default=30.0, help="seconds of applies (default 30)")
    p.add_argument("--flips", type=int, default=10, help="metric threshold crossings (default 10)")
    p.add_argument("--profile", action="store_true", help="run the operator under cProfile; print its top functions")
    p.add_argument("--keep", action="store_true", help="keep the work dir (operator log, profile)")
    p.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    return p


def _ms(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "no samples"
    return (f"p50 {d['p50'] * 1000:.0f} ms, p90 {d['p90'] * 1000:.0f} ms, p99 {d['p99'] * 1000:.0f} ms, "
            f"max {d['max'] * 1000:.0f} ms (n={d['n']})")


def _verdict(ok: bool) -> str:
    return "meets target" if ok else "MISSES target"


def _git_state() -> dict[str, Any]:
    """The commit measured, and which files differed from it (numbers depend on uncommitted work too)."""
    def git(*a: str) -> str:
        proc = subprocess.run(["git", *a], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                              check=False)
        return proc.stdout

    return {"commit": git("rev-parse", "--short", "HEAD").strip(),
            "dirty": [line[3:] for line in git("status", "--porcelain", "--", "slime").splitlines() if line]}


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds the ExitStack: everything started is stopped


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    phases = args.only or list(PHASES)
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "loadavg_at_start": os.getloadavg()},
        "args": {k: str(v) for k, v in vars(args).items()},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "code": _git_state(),
    }
    lines: list[str] = []

    def say(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    code = results["code"]
    say(f"code: {code['commit']}" + (f" + uncommitted changes to {', '.join(code['dirty'])}" if code["dirty"] else "")
        + f"; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    t0 = time.monotonic()
    if "render" in phases:
        r = results["render"] = render.run(limiters=args.limiters, namespaces=args.namespaces)
        for line in render.report(r):
            say(line)

    workdir = Path(tempfile.mkdtemp(prefix="slime-bench-"))
    profile = workdir / "operator.prof"
    try:
        if {"quiet", "apply", "reaction"} & set(phases):
            _cluster_phases(args, phases, workdir, results, say)
    except KeyboardInterrupt:
        print("\ninterrupted: everything started was stopped", file=sys.stderr)
        return 130
    finally:
        if args.profile and profile.exists():
            args.out.parent.mkdir(parents=True, exist_ok=True)
            for name, what in (("operator.prof", "event loop thread"), ("operator.prof.threads", "other threads")):
                print(f"--- operator profile, {what} (kept as {args.out.parent / name})")
                print(cluster.profile_top(workdir / name))
                shutil.copyfile(workdir / name, args.out.parent / name)
            print("(timings measured with --profile are inflated by the profiler)")
        if args.keep:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        results["total_s"] = time.monotonic() - t0
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(cluster.dump(results) + "\n")
    print(f"\nresults written to {args.out} ({results['total_s']:.0f}s in all)")
    return 0


def _cluster_phases(args: argparse.Namespace, phases: list[str], workdir: Path, results: dict[str, Any],
                    say: Any) -> None:
    spares = int(args.rate * args.duration / 2) + 1 if "apply" in phases else 0
    with contextlib.ExitStack() as stack:
        env = cluster.Env(stack, workdir, limiters=args.limiters, namespaces=args.namespaces,
                          refresh=args.refresh, scrape=args.scrape, profile=args.profile, spares=spares)
        env.start()
        results["setup"] = s = {**env.timings, **cluster.setup_limiters(env)}
        settled = f"{s['settled_s']:.1f}s" if s["settled_s"] is not None else "NOT within 300s"
        say(f"setup: {s['limiters']} SmartLimiters created in {s['create_calls_s']:.1f}s; all their EnvoyFilters "
            f"after {s['all_envoyfilters_s']:.1f}s; all statuses written (observedGeneration) after {settled}")
        say(f"  API writes meanwhile (apiserver, everyone's): {s['apiserver_writes_by_resource']}")
        if s["rls_entries_missing"]:
            say(f"  RLS ConfigMap lacks the entries of {s['rls_entries_missing']} of {s['global_limiters']} "
                "global limiters")
        for phase, show in (("quiet", _show_quiet), ("apply", _show_apply), ("reaction", _show_reaction)):
            if phase not in phases:
                continue
            try:
                results[phase] = r = PHASE_FUNCS[phase](env, args)
            except TimeoutError as e:  # a saturated operator: report it, still stop everything cleanly
                results[phase] = {"error": str(e)}
                say(f"{phase}: FAILED: {e}")
                continue
            show(r, s, say)
        results["operator_log_tail"] = env.operator.log_path.read_text(errors="replace").splitlines()[-5:]
    stop = results["operator_stop"] = env.operator.stopped
    if stop.get("killed"):
        say(f"operator: did not exit within {stop['seconds']:.0f}s of SIGTERM; killed")


PHASE_FUNCS: dict[str, Callable[[cluster.Env, argparse.Namespace], dict[str, Any]]] = {
    "quiet": lambda env, args: cluster.quiet(env),
    "apply": lambda env, args: cluster.apply_latency(env, rate=args.rate, duration=args.duration),
    "reaction": lambda env, args: cluster.reaction(env, flips=args.flips),
}


def _show_quiet(q: dict[str, Any], s: dict[str, Any], say: Callable[[str], None]) -> None:
    say(f"quiet: {q['slime_api_writes']:.0f} slime_api_writes_total in {q['seconds']:.0f}s "
        f"({q['seconds'] / q['refresh_s']:.0f} refreshes, {q['limiters']} limiters) - target 0: "
        f"{_verdict(q['slime_api_writes'] == 0)}")
    if not q["settled_before"]:
        say("  (the operator had not caught up within 60s: statuses not all written yet)")
    say(f"  apiserver writes: {q['apiserver_writes_by_resource'] or 'none'}; watch events: "
        f"EnvoyFilter {q['envoyfilter_events']}, SmartLimiter {q['smartlimiter_events']}")
    if q["kubernetes_events_by_source"]:
        say(f"  Kubernetes Events written meanwhile: {q['kubernetes_events_by_source']}")
    cpu = q["operator_cpu_s"]
    say(f"  operator: RSS {q['operator_rss_mib']:.0f} MiB; CPU {cpu['total']:.1f}s in {q['seconds']:.0f}s "
        f"= {q['operator_cpu_percent_of_core']:.0f}% of a core (event loop {cpu['main']:.1f}s, "
        f"other threads {cpu['threads']:.1f}s)")
    say(f"  evaluations: {q['reconciles_per_s']:.0f}/s ({q['limiters']} limiters, refresh {q['refresh_s']:g}s); "
        f"mean {1000 * (q['reconcile_mean_s'] or 0):.0f} ms each (wall, incl. waits)")
    if s["rls_entries_missing"]:
        say(f"  RLS entries still missing after the quiet period: {q['rls_entries_missing_after']}")


def _show_apply(a: dict[str, Any], s: dict[str, Any], say: Callable[[str], None]) -> None:
    say(f"apply: {a['applies']} applies at {a['rate_per_s']:.1f}/s with {s['limiters']} present; "
        f"apply -> EnvoyFilter {_ms(a['all'])}; not seen within 30s: {a['timeouts']}")
    say(f"  target p99 <= 200 ms: {_verdict(not a['timeouts'] and a['all'].get('p99', 1e9) <= a['target_p99_s'])}")
    say(f"  creates: {_ms(a['create'])}")
    say(f"  updates: {_ms(a['update'])}")
    cpu = a["operator_cpu_s"]
    say(f"  operator CPU during applies: {cpu['total']:.1f}s in {a['seconds']:.0f}s (event loop {cpu['main']:.1f}s, "
        f"other threads {cpu['threads']:.1f}s)")


def _show_reaction(r: dict[str, Any], s: dict[str, Any], say: Callable[[str], None]) -> None:
    missed = f"; not seen within {r['timeout_s']:.0f}s: {r['missed']}" if r["missed"] else ""
    say(f"reaction: metric crossing -> EnvoyFilter {_ms(r['all'])}{missed}")
    ok = not r["missed"] and r["all"].get("max", 1e9) <= r["target_s"]
    say(f"  target <= 2 x refresh + scrape = {r['target_s']:.1f}s: {_verdict(ok)} (worst case counted)")
    say(f"  appear: {_ms(r['appear'])}; disappear: {_ms(r['disappear'])}")


if __name__ == "__main__":
    sys.exit(main())

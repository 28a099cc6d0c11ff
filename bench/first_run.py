"""``python -m bench first-run``: how long a newcomer waits from ``git clone`` to a served demo.

Clones this repository's HEAD into a temporary folder and, with an empty model cache
(``HUMANLINE_MODEL_CACHE``), an empty uv cache (``UV_CACHE_DIR``, so every package comes from the
registry), no pip cache and a fresh ``.venv``, runs what ``make run`` runs: ``make install``,
``make train``, then ``python -m bot serve`` on free ports until ``/healthz`` answers 200. Each
phase is timed, and so is the total from clone to healthy; then the model's size on disk and the
cold start of a second ``serve`` (process start → ``/healthz`` 200, the model already trained).

Prints a table (phase, seconds, target, met?) and writes ``bench/results/first_run.json``
(``first_run-quick.json`` for ``--skip-install`` / ``--seed-model`` runs, which are not first runs).

    python -m bench first-run [--keep] [--skip-install] [--seed-model models/humanline-….tar.gz]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from bench.servers import Server, free_port, wait_http

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

# Issue #14's "done when": a served demo within 5 minutes of a fresh clone on a 2-core machine,
# training within 2 minutes, a model of at most 30 MB, a cold start within 10 s.
TARGETS: dict[str, float] = {"total_s": 300.0, "train_s": 120.0, "model_mb": 30.0, "cold_start_s": 10.0}
# (key in the report, label, unit, key in TARGETS or None)
ROWS: list[tuple[str, str, str, str | None]] = [
    ("clone_s", "clone", "s", None),
    ("install_s", "install (make install)", "s", None),
    ("train_s", "train (make train)", "s", "train_s"),
    ("start_s", "start (serve → /healthz 200)", "s", None),
    ("total_s", "total: clone → /healthz 200", "s", "total_s"),
    ("model_mb", "model on disk", "MB", "model_mb"),
    ("cold_start_s", "cold start (second serve)", "s", "cold_start_s"),
]
HEALTHZ_TIMEOUT_S = 300.0


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of every child process this one has waited for, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree_cpu_s(pid: int, proc_root: Path = Path("/proc")) -> float:
    """CPU seconds of a live process and all its descendants so far (Linux ``/proc``), including
    children they have already reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for stat in proc_root.glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # exited meanwhile
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        parent[int(stat.parent.name)] = int(fields[1])
        cpu[int(stat.parent.name)] = sum(int(x) for x in fields[11:15]) / tick  # utime stime cutime cstime
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0.0)
        todo.extend(child for child, ppid in parent.items() if ppid == current)
    return total


def _progress(msg: str) -> None:
    print(f"[first-run {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def rows(report: dict[str, Any]) -> list[list[str]]:
    """The table's rows: phase, measured value, target, met?, CPU seconds (``-`` where there is no
    target or CPU figure; ``n/a`` where the phase was not measured, e.g. after a failure)."""
    out: list[list[str]] = []
    for key, label, unit, target_key in ROWS:
        value = report.get(key)
        shown = "n/a" if value is None else f"{value:.1f}"
        if key in report.get("not_fresh", []):
            shown += " *"
        target = TARGETS.get(target_key) if target_key else None
        target_text = f"≤ {target:g} {unit}" if target is not None else "-"
        met = "-" if target is None else ("n/a" if value is None else ("yes" if value <= target else "NO"))
        cpu = report.get(key.removesuffix("_s") + "_cpu_s") if unit == "s" else None
        out.append([label, f"{shown} {unit}", target_text, met, "-" if cpu is None else f"{cpu:.0f} s"])
    return out


def all_met(report: dict[str, Any]) -> bool:
    """Every target measured and met (a run that failed or skipped a phase does not meet them)."""
    return all(report.get(key) is not None and report[key] <= limit for key, limit in TARGETS.items())


def table(body: list[list[str]], header: tuple[str, ...] = ("phase", "measured", "target", "met?", "CPU")) -> str:
    widths = [max(len(r[i]) for r in [list(header), *body]) for i in range(len(header))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))  # noqa: E731
    return "\n".join([line(list(header)), line(["-" * w for w in widths]), *(line(r) for r in body)])


def fresh_env(workdir: Path, skip_install: bool) -> dict[str, str]:
    """The environment of a newcomer's shell: nothing of this checkout (``PYTHONPATH``, an active
    venv, a model or database setting), empty caches, and the hub's defaults otherwise."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "DATABASE_URL", "HUMANLINE_BRAIN_WORKERS")
           and not (k.startswith("HUMANLINE_") or k.startswith("UV_") or k.startswith("PIP_"))}
    env["HUMANLINE_MODEL_CACHE"] = str(workdir / "model-cache")
    if not skip_install:
        env["UV_CACHE_DIR"] = str(workdir / "uv-cache")
        env["PIP_NO_CACHE_DIR"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _run_step(cmd: list[str], cwd: Path, env: dict[str, str], log: Path, echo: TextIO | None) -> tuple[float, float]:
    """Run ``cmd``, its output into ``log`` (and echoed, indented); seconds taken and CPU seconds
    used by it and its children. Raises on failure."""
    started, cpu_before = time.monotonic(), _children_cpu_s()
    with log.open("w", encoding="utf-8") as handle:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace")
        assert proc.stdout is not None
        for line in proc.stdout:
            handle.write(line)
            if echo is not None:
                echo.write(f"    | {line}")
                echo.flush()
        returncode = proc.wait()
    if returncode != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-40:])
        raise RuntimeError(f"{' '.join(cmd)} failed with exit {returncode}; log {log}:\n{tail}")
    return time.monotonic() - started, round(_children_cpu_s() - cpu_before, 1)


def _serve(repo: Path, env: dict[str, str], log: Path) -> tuple[Server, float, float]:
    """``python -m bot serve`` of the clone on free ports; the server, its seconds to /healthz 200
    and the CPU seconds its process tree (hub, brain workers, action server) used until then."""
    port, action_port = free_port(), free_port()
    serve_env = {**env, "HUMANLINE_PORT": str(port),
                 # 5055 may be taken on a shared machine; the hub starts its action server here
                 "HUMANLINE_ACTION_ENDPOINT": f"http://127.0.0.1:{action_port}/webhook"}
    handle = log.open("wb")
    started = time.monotonic()
    proc = subprocess.Popen([str(repo / ".venv" / "bin" / "python"), "-m", "bot", "serve"], cwd=repo,
                            env=serve_env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server("hub", proc, port, log)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", HEALTHZ_TIMEOUT_S, proc)
    except BaseException:
        server.stop()
        raise
    return server, time.monotonic() - started, round(tree_cpu_s(proc.pid), 1)


def measure(workdir: Path, skip_install: bool, seed_model: Path | None, echo: TextIO | None,
            report: dict[str, Any], on_server: Callable[[Server], None]) -> None:
    """Fill ``report`` phase by phase (what was measured stays there if a later phase fails)."""
    repo = workdir / "humanline"
    logs = workdir / "logs"
    logs.mkdir()
    env = fresh_env(workdir, skip_install)
    (workdir / "model-cache").mkdir()
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    report["commit"] = head

    started = time.monotonic()
    _progress(f"clone {ROOT} at {head[:10]} into {repo}")
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "checkout", "--quiet", "--detach", head], check=True, env=env)
    report["clone_s"] = round(time.monotonic() - started, 1)
    if seed_model is not None:
        # Under the name the clone's `make train` looks for: a check of the harness, not of the model.
        from bot.training import model_name

        shutil.copy2(seed_model, workdir / "model-cache" / f"{model_name(repo)}.tar.gz")

    if skip_install:
        # The venv of the Python running this benchmark stands in for `make install`'s, but only
        # when it is up to date for this pyproject.toml: `make install` must not touch it.
        stamp = Path(sys.prefix) / f".installed-{hashlib.md5((repo / 'pyproject.toml').read_bytes()).hexdigest()[:12]}"
        if not stamp.is_file():
            raise RuntimeError(f"--skip-install: {sys.prefix} is not installed from this pyproject.toml ({stamp.name})")
        (repo / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
        # The clone's pyproject.toml is newer than the stamp, which would make `make` reinstall into
        # that venv (pointing its editable install at this temporary clone): date it back, and check.
        older = stamp.stat().st_mtime - 60
        os.utime(repo / "pyproject.toml", (older, older))
        if subprocess.run(["make", "-q", f".venv/{stamp.name}"], cwd=repo, env=env).returncode != 0:
            raise RuntimeError("--skip-install: make still considers the install out of date; not touching the venv")
    _progress("make install" + (" (reusing this venv)" if skip_install else " (empty uv and pip caches)"))
    install_s, report["install_cpu_s"] = _run_step(["make", "install"], repo, env, logs / "install.log", echo)
    report["install_s"] = round(install_s, 1)
    _progress(f"installed in {report['install_s']} s; make train (empty model cache"
              f"{', seeded' if seed_model else ''})")
    train_s, report["train_cpu_s"] = _run_step(["make", "train"], repo, env, logs / "train.log", echo)
    report["train_s"] = round(train_s, 1)

    _progress(f"trained in {report['train_s']} s; python -m bot serve until /healthz answers 200")
    server, start_s, report["start_cpu_s"] = _serve(repo, env, logs / "serve-1.log")
    on_server(server)
    report["start_s"] = round(start_s, 1)
    report["total_s"] = round(time.monotonic() - started, 1)
    report["total_cpu_s"] = sum(report[k] for k in ("install_cpu_s", "train_cpu_s", "start_cpu_s"))
    # The box follows /healthz 200 within one poll of the banner thread (bot/banner.py).
    deadline = time.monotonic() + 15
    while "Humanline is ready" not in (serve_log := (logs / "serve-1.log").read_text(errors="replace")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    server.stop()
    report["banner_shown"] = "Humanline is ready" in serve_log
    report["demo_password_shown"] = "username demo   password " in serve_log

    models = sorted((repo / "models").glob("humanline-*.tar.gz"))
    if models:
        report["model"] = models[-1].name
        report["model_mb"] = round(models[-1].stat().st_size / 1e6, 2)

    _progress(f"healthy after {report['total_s']} s in all; second start for the cold start")
    server, cold, report["cold_start_cpu_s"] = _serve(repo, env, logs / "serve-2.log")
    on_server(server)
    report["cold_start_s"] = round(cold, 1)
    server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench first-run", description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (clone, venv, logs)")
    parser.add_argument("--skip-install", action="store_true",
                        help="reuse this Python's venv instead of `make install` (a quick check, not a first run)")
    parser.add_argument("--seed-model", type=Path, default=None,
                        help="put this model archive in the empty model cache first (a quick check: no training)")
    parser.add_argument("--quiet", action="store_true", help="do not echo the steps' output")
    args = parser.parse_args(argv)
    quick = args.skip_install or args.seed_model is not None

    workdir = Path(tempfile.mkdtemp(prefix="humanline-first-run-"))
    report: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "skip_install": args.skip_install,
        "seed_model": str(args.seed_model) if args.seed_model else None,
        "not_fresh": [k for k, q in (("install_s", args.skip_install), ("train_s", args.seed_model)) if q],
        "targets": TARGETS,
    }
    running: list[Server] = []
    failed = False
    try:
        measure(workdir, args.skip_install, args.seed_model, None if args.quiet else sys.stdout, report,
                running.append)
    except (RuntimeError, TimeoutError, subprocess.CalledProcessError) as exc:
        failed = True
        report["error"] = str(exc)
        print(f"error: {exc}", file=sys.stderr)
        for log in sorted((workdir / "logs").glob("serve-*.log")) if (workdir / "logs").is_dir() else []:
            print(f"--- {log.name} (last lines) ---\n{''.join(log.read_text(errors='replace').splitlines(True)[-30:])}",
                  file=sys.stderr)
    finally:
        for server in running:
            server.stop()
        if args.keep:
            _progress(f"kept {workdir}")
            report["kept"] = str(workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
    report["all_targets_met"] = all_met(report)

    print()
    print(table(rows(report)))
    if report["not_fresh"]:
        print("* not a first run: " + ", ".join(
            {"install_s": "the install reused this venv", "train_s": "the model cache was seeded"}[k]
            for k in report["not_fresh"]))
    print(f"\n{report['cpus']} CPUs; load average (1/5/15 min) at start {report['loadavg_start']}, "
          f"at end {report['loadavg_end']}; ready banner shown: {report.get('banner_shown')}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / ("first_run-quick.json" if quick else "first_run.json")
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    _progress(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""The command line of every study: ``python -m experiments.<study> --preset P --set block.key=value --workdir DIR``.

Bad input (unknown preset or key, a value that does not parse or is out of range, missing data, a model too large
for the memory there is, an unusable run directory, one that holds another run or that another run is using, …)
prints one line ``error: …`` on stderr and exits with status 2, before any file of an existing run is changed;
nothing is written that looks complete (``run.json`` says ``running``, ``interrupted`` or ``failed`` until
``report.md`` exists). A run whose population failed (every member diverged) writes its report, then prints one
line and exits with status 1.

Training is checkpointed under ``<workdir>/checkpoints/<population>``: after Ctrl-C, SIGTERM (a pre-empted VM) or a
kill, rerunning the same command resumes it. Ctrl-C or SIGTERM in any phase prints one line, records ``run.json``
as ``interrupted`` and exits with status 130. ``--distributed`` (or
``CROBUST_DISTRIBUTED=1``) starts JAX's multi-host runtime first. Compiled programs are cached on disk
(:func:`enable_compilation_cache`), so a rerun or a resumed run starts training at once.
"""

from __future__ import annotations

import argparse
import os
import sys

from crobust._errors import CrobustError
from crobust.checkpoint import TrainingInterrupted
from crobust.config import resolve
from crobust.parallel import host_threads, maybe_initialize_distributed
from crobust.study.runner import RunFailed
from crobust.study.signals import RunInterrupted

ENV_CACHE = "CROBUST_CACHE_DIR"


def enable_compilation_cache(path: str | None = None) -> str | None:
    """Turn on JAX's persistent compilation cache in ``path`` (default ``$CROBUST_CACHE_DIR``, else
    ``~/.cache/crobust/jax``; ``CROBUST_CACHE_DIR=off`` disables it). Every compiled program is kept, so the same
    program on the same machine, jax version and flags is compiled once. Returns the folder, or None if off."""
    import jax

    path = path or os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "crobust", "jax")
    if path.lower() in ("off", "none", "0"):
        return None
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None                                   # an unwritable cache only costs compile time
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def preset_parser(prog: str, presets, description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description.split("\n\n")[0] if description else None)
    p.add_argument("--preset", default="small", help=f"one of: {', '.join(presets)} (default: small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration field by its dotted key (repeatable); tuples are comma-separated, "
                        "e.g. --set train.lr=3e-4 --set grid.alpha=0,0.01")
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<study>-<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--power", action="store_true",
                   help="train nothing: print each claim's smallest reachable p at this preset (crobust.study.power); "
                        "exit 1 if a primary claim cannot reach the level")
    p.add_argument("--distributed", action="store_true", default=None,
                   help="multi-host run: call jax.distributed.initialize() first (same as CROBUST_DISTRIBUTED=1)")
    return p


def run_cli(study, argv=None) -> int:
    """Parse the command line and run ``study`` (a :class:`crobust.study.Study`); the exit status."""
    module = sys.modules.get(f"experiments.{study.name}") or sys.modules.get("__main__")
    parser = preset_parser(f"python -m experiments.{study.name}", study.presets, getattr(module, "__doc__", "") or "")
    args = parser.parse_args(argv)
    workdir = args.workdir or os.path.join("runs", f"{study.name}-{args.preset}")
    try:
        maybe_initialize_distributed(args.distributed)
        host_threads()                    # a bad $CROBUST_HOST_THREADS is refused before anything is written
        cfg = resolve(study.presets, args.preset, args.overrides)
        if args.power:
            from crobust.study import power
            return power.main(study, cfg, args.preset)
        enable_compilation_cache()
        study.run(cfg, workdir, preset=args.preset, progress=not args.quiet)
    except CrobustError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except TrainingInterrupted:
        return 130                        # the trainer has printed where its checkpoint is and how to resume
    except KeyboardInterrupt as e:
        why = f" ({e.signal})" if isinstance(e, RunInterrupted) else ""
        ckpt = os.path.join(workdir, "checkpoints")
        if os.path.isdir(ckpt) and any(os.scandir(ckpt)):
            print(f"interrupted{why}: {study.name} did not finish; training checkpoints are in {ckpt}; rerun the "
                  f"same command to resume", file=sys.stderr)
        else:
            print(f"interrupted{why}: {study.name} did not finish (no checkpoint written yet); rerun the same command "
                  f"to start it again", file=sys.stderr)
        return 130
    print(os.path.join(workdir, "report.md"))
    return 0

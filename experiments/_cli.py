"""The command line shared by every study: ``python -m experiments.<study> --preset P --set k=v --workdir DIR``.

Bad input (unknown preset or key, a value that does not parse, missing data, …) prints one line ``error: …`` on
stderr and exits with status 2; nothing is written that looks complete (the run directory's ``run.json`` says
``running``, ``interrupted`` or ``failed`` until ``report.md`` exists).

Training is checkpointed under ``<workdir>/checkpoints``: after Ctrl-C, SIGTERM (a pre-empted VM) or a kill,
rerunning the same command resumes it (exit status 130 on an interrupt). ``--distributed`` (or
``CROBUST_DISTRIBUTED=1``) starts JAX's multi-host runtime first (:func:`crobust.parallel.maybe_initialize_distributed`).
"""

from __future__ import annotations

import argparse
import os
import sys

from crobust._errors import CrobustError
from crobust.checkpoint import TrainingInterrupted
from crobust.config import resolve
from crobust.parallel import maybe_initialize_distributed


def preset_parser(prog: str, presets, description: str = "") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description.split("\n\n")[0] if description else None)
    p.add_argument("--preset", default="small", help=f"one of: {', '.join(presets)} (default: small)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a configuration field (repeatable); tuples are comma-separated, e.g. alphas=0,0.01")
    p.add_argument("--workdir", default=None, help="run directory (default: runs/<study>-<preset>)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--distributed", action="store_true", default=None,
                   help="multi-host run: call jax.distributed.initialize() first (same as CROBUST_DISTRIBUTED=1)")
    return p


def run_study(module, argv=None) -> int:
    name = module.__name__.rsplit(".", 1)[-1]
    parser = preset_parser(f"python -m experiments.{name}", module.PRESETS, module.__doc__ or "")
    args = parser.parse_args(argv)
    workdir = args.workdir or os.path.join("runs", f"{name}-{args.preset}")
    try:
        maybe_initialize_distributed(args.distributed)
        cfg = resolve(module.PRESETS, args.preset, args.overrides)
        module.run(cfg, workdir, preset=args.preset, progress=not args.quiet)
    except CrobustError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingInterrupted:
        return 130                        # the trainer has printed where its checkpoint is and how to resume
    except KeyboardInterrupt:
        ckpt = os.path.join(workdir, "checkpoints")
        if os.path.isdir(ckpt) and any(d.isdigit() for d in os.listdir(ckpt)):
            print(f"interrupted: {name} did not finish; training checkpoints are in {ckpt}; rerun the same command "
                  f"to resume", file=sys.stderr)
        else:
            print(f"interrupted: {name} did not finish (no checkpoint written yet); rerun the same command to start "
                  f"it again", file=sys.stderr)
        return 130
    print(os.path.join(workdir, "report.md"))
    return 0

#!/usr/bin/env python
"""Share DVC's run-cache so that a teammate's `dvc repro --pull` restores instead of rerunning.

    python scripts/push_run_cache.py [-r REMOTE] [-j JOBS]

does `dvc push --run-cache`, then uploads every output that the local run-cache entries refer
to. Why the second step: DVC 3's `dvc push --run-cache` uploads the entries themselves
(`.dvc/cache/runs/`: "this stage, from these deps and params, produced outputs with these
hashes") and the outputs of the workspace's `dvc.lock`, but of those only the ones DVC caches.
litpipe's metrics and plots are `cache: false` (they live in git, where the metric gate reads
them), so their bytes never reach the remote; on another machine an entry whose outputs cannot
all be fetched is unusable, and DVC runs the stage again: a teammate asking for params someone
already trained would train again. DVC does keep those bytes in the local cache when it
records a run, so they can be pushed from there; this script does that, and nothing else.

The teammate's side needs no script: `dvc pull --run-cache` fetches the entries, and
`dvc repro --pull` fetches the outputs of whichever entry matches and checks them out
("Stage 'train' is cached - skipping run"). tests/e2e/test_remote_s3.py runs both sides.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--remote", help="DVC remote (default: the default remote)")
    parser.add_argument("-j", "--jobs", type=int, help="parallel uploads (DVC's default)")
    args = parser.parse_args(argv)

    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo() as repo:
            # 1. What `dvc push --run-cache` does: the entries, plus the workspace's outputs.
            pushed = repo.push(remote=args.remote, jobs=args.jobs, run_cache=True)
            # 2. Every output any local entry refers to, cached or not in dvc.yaml. An
            #    object missing here belongs to an entry pulled from the remote: whoever
            #    recorded it pushed its outputs.
            runs = Path(repo.stage_cache.cache_dir)
            entries = [(f.parent.name, f.name) for f in sorted(runs.glob("*/*/*"))
                       if f.is_file()]
            wanted = set()
            for objs in repo.stage_cache.get_used_objs(entries).values():
                wanted |= objs
            local = {hi for hi in wanted if (repo.cache.legacy if hi.name == "md5-dos2unix"
                                             else repo.cache.local).exists(hi.value)}
            with repo.lock:
                result = repo.cloud.push(local, jobs=args.jobs, remote=args.remote)
    except DvcException as exc:
        print(f"push_run_cache: {exc}", file=sys.stderr)
        return 1
    if result.failed:
        print(f"push_run_cache: {len(result.failed)} output(s) failed to upload",
              file=sys.stderr)
        return 1
    print(f"pushed {pushed} file(s) with `dvc push --run-cache`, then "
          f"{len(result.transferred)} more output(s) of {len(entries)} run-cache entries")
    return 0


if __name__ == "__main__":
    sys.exit(main())

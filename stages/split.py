"""DVC stage `split`: validate params.yaml, then run litpipe's split step (see dvc.yaml)."""

import sys

from litpipe.stage_runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("split"))

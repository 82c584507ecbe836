"""DVC stage `train`: validate params.yaml, then run litpipe's train step (see dvc.yaml)."""

import sys

from litpipe.stage_runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("train"))

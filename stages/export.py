"""DVC stage `export`: validate params.yaml, then run litpipe's export step (see dvc.yaml)."""

import sys

from litpipe.stage_runner import run_stage

if __name__ == "__main__":
    sys.exit(run_stage("export"))

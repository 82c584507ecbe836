"""DVC stage `validate`: check params.yaml before any other stage removes its outputs.

DVC deletes a stage's outputs before running it (outputs are not `persist`, so that its
run-cache works). Every stage depends on this one, so a bad value stops `dvc repro` here,
in a second, before any output is touched.
"""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("validate") as run:
        from litpipe.stage import write_validated_marker

        write_validated_marker()

"""DVC stage `train`: fit the model; checkpoints and run.json into models/."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("train") as run:
        # An unusable tracking store fails here, in seconds, before torch and lightning
        # (seconds to import) load.
        from litpipe.tracking.store import check_tracking

        check_tracking(run.params.tracking)
        from litpipe.training.train import train

        run.summary = train(run.params, started=run.started)

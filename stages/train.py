"""DVC stage `train`: fit the model; checkpoints and run.json into models/."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("train") as run:
        # Imported once params.yaml is valid: torch and lightning take seconds to import.
        from litpipe.training.train import train

        run.summary = train(run.params)

"""DVC stage `split`: seeded train/val/test arrays and stats.json into data/processed/."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("split") as run:
        # Imported once params.yaml is valid: numpy and the dataset readers.
        from litpipe.data.split import split

        run.summary = split(run.params)["counts"]

"""DVC stage `download`: fetch and verify the dataset's raw files into data/raw/."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("download") as run:
        # Imported once params.yaml is valid: cheap here, but every stage follows one pattern.
        from litpipe.data.download import download

        run.summary = download(run.params)

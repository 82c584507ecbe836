"""DVC stage `export`: ONNX + TorchScript into models/export/, registered in MLflow."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("export") as run:
        # Imported once params.yaml is valid: torch and onnx take seconds to import.
        from litpipe.cores import CoreShare
        from litpipe.exporting.export import export

        with CoreShare():  # its share of the cores beside other trainings and stages
            run.summary = export(run.params, started=run.started)

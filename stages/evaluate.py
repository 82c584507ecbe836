"""DVC stage `evaluate`: test metrics, confusion matrix and pictures into reports/."""

from litpipe.stage import stage

if __name__ == "__main__":
    with stage("evaluate") as run:
        # Imported once params.yaml is valid: torch and lightning take seconds to import.
        from litpipe.cores import CoreShare
        from litpipe.evaluation.evaluate import evaluate

        with CoreShare():  # its share of the cores beside other trainings and stages
            run.summary = evaluate(run.params, started=run.started)

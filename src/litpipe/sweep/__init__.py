"""`litpipe sweep`: Optuna studies over params.yaml, every trial a DVC experiment."""

"""Every conversation with MLflow: where runs go (:mod:`.store`) and the one run each model
gets (:mod:`.run`)."""

"""What the tests share that is not a fixture: plain functions, classes and constants.

One job per module: ``repo`` (the checkout, repository copies, params edits, commands),
``dvc_queue`` (running DVC's experiment queue to the end), ``system`` (the apt packages the
tests need), ``resume`` (interrupting a training), ``servers`` (the PostgreSQL-backed MLflow
stack), ``sweep`` (sweep workers racing for the study's parent run), ``http`` (a
misbehaving HTTP mirror), ``datasets`` (dataset files in their real formats), ``images``
(PNG files Pillow cannot write), ``models`` (a trained model and its export), ``registry``
(the same, registered in a SQLite MLflow store), ``s3`` (moto's S3 server).
Fixtures live in the ``conftest.py`` files; test files import only from here.
"""

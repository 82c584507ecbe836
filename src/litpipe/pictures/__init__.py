"""Pictures users look at instead of reading numbers: cheap grids drawn while training
(grids.py) and the matplotlib figures the evaluate stage writes (figures.py)."""

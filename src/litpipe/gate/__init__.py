"""``litpipe gate``: metric bounds and regressions against a git baseline, for CI."""

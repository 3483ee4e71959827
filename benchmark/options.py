"""Names a user picks on the command line that deeper modules act on, in one light module so that
`mbr-bench --help` lists them without importing the modules that use them."""

SAMPLERS = ("tpe", "grid")  # benchmark/search.py: make_sampler
# How each fold's training length is chosen without the video it is scored on (benchmark/search.py).
PROTOCOLS = ("mean_curve", "inner")
DEFAULT_PROTOCOL = "mean_curve"
# What the leaderboard deploys and tests (benchmark/results/refit.py): the average of the K fold
# models the threshold was tuned on, or one model refit on all training videos.
FINAL_KINDS = ("ensemble", "refit")
DEFAULT_FINAL = "refit"  # measured: see README, Protocol (threshold transfer and test PR-AUC, two data sets)

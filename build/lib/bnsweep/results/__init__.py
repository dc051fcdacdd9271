"""Results: what trials wrote (Ray Tune experiment directories) as pandas DataFrames, tables,
figures and a report. Reads JSON and text only, never pickles, and imports neither Ray nor torch.

    from bnsweep import results
    df = results.load("results/demo")        # one row per trial
    hist = results.history("results/demo")   # one row per trial and epoch
"""

from bnsweep.errors import NoExperimentError, UsageError
from bnsweep.results.columns import eps_columns, trial_keys
from bnsweep.results.formats import markdown_table, select, write_frame
from bnsweep.results.load import Experiment, Paths, find_experiments, history, load

__all__ = ["Experiment", "NoExperimentError", "Paths", "UsageError", "eps_columns", "find_experiments",
           "history", "load", "markdown_table", "select", "trial_keys", "write_frame"]

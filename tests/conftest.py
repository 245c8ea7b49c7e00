"""Hypothesis profiles for the suite.

``ci`` (the default) draws the same examples on every run (``derandomize``), so that a green
``make test`` stays green on the same code, and reports a failing example as drawn, without
shrinking it: each shrink step of the RTL tests is a whole simulation, and shrinking one failure
took the suite past its time limit. ``explore`` draws new examples on every run and shrinks what
fails, for hunting bugs: ``HYPOTHESIS_PROFILE=explore make test-fast``.
"""

import os

from hypothesis import Phase, settings

settings.register_profile("ci", derandomize=True, database=None, print_blob=True,
                          phases=[Phase.explicit, Phase.generate])
settings.register_profile("explore", print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

"""Models: the analytic cycle model the planner and the tools use (equal to the RTL counters)."""

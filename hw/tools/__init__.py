"""Tools: the command line, design-space exploration, board commands."""

"""The demo: a miniature corpus in the released layout and a tiny generator run, end to end on a CPU."""

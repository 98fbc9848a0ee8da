"""Load tests (Locust), the in-process FunASR baseline, and the capacity planner."""

"""The reward-based RL stage: the exact log-linear contextual-bandit testbed (testbed, testbed_data)."""

"""What makes a TRL trainer a robust drop-in: the Robust*Config classes, the worst case over the optimizer
batch, the group column and saved settings, and reading your own preference data."""

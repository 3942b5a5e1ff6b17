"""Stage 2, DPO: a run's config (`config`), TRL's path (`trainer`, `run`), the exact cached-trunk fast path
(`fast`, `fast_train`, `fast_run`) and notebook 03's plan (`study`)."""

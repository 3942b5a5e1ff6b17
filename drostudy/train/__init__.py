"""Training loops on TRL: reward models (`reward`), DPO (`dpo`) and reward-based RL (`rl`)."""

"""Direct preference optimisation: the exact cached-trunk fast path (`drostudy.dpo.fast`)."""

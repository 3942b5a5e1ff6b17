"""The offline multi-domain preference suite (built from real `evals` prompts) and hub loaders."""

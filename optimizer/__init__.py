"""fnforge optimizer: LLM access, agents and training."""

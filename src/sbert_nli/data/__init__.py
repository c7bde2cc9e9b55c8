"""Data: NLI and STS readers, the synthetic NLI generator, and batching (text and token ids only)."""

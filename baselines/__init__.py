"""Baselines on the FlowPRO data-collection protocol: DAgger, DAgger-Buffered, pi0.6*, TPO."""

"""FlowPRO: reward-free fine-tuning of flow-matching VLA policies from human corrections (policies, data, intervention-rollback, Smooth Interpolation, RPRO losses, training)."""

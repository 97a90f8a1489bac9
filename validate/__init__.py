"""fitplan's validator: real training steps, measured peaks, estimate beside measurement.

It imports torch, transformers, peft and bitsandbytes (the ``validate`` extra); the planner never does.
"""

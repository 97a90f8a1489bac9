"""fitplan's validator: real training steps, measured peaks, estimate beside measurement.

Built in a later step; it imports torch, transformers, peft and bitsandbytes, the planner never does.
"""
